"""Context prediction: patch-pair geometry, labels, countermeasures, and a tiny pretraining."""

from __future__ import annotations


import pytest
import torch

from benchharness.interfaces import RunContext
from benchharness.plugins import Registry
from benchharness.representation import Representation
from benchharness_plugins import context
from benchharness_plugins.context.patches import (NEIGHBOUR_OFFSETS, PatchGrid, label_of_offset,
                                                  labels_from_boxes, offset_of_label)


def test_neighbour_labels_are_row_major_around_the_centre():
    assert NEIGHBOUR_OFFSETS == ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
    for label in range(8):
        assert label_of_offset(*offset_of_label(label)) == label
    with pytest.raises(ValueError):
        label_of_offset(0, 0)


def test_sampled_pairs_respect_grid_gap_jitter_and_bounds():
    grid = PatchGrid(patch=10, gap=5, jitter=2)
    side = grid.span + 3
    centre, other, labels = grid.sample(500, side, torch.Generator().manual_seed(0), per_centre=3)
    assert centre.shape == (500, 4) and other.shape == (500, 3, 4) and labels.shape == (500, 3)
    for boxes in (centre[:, None], other):  # inside the image, exactly patch-sized
        assert (boxes[..., :2] >= 0).all() and (boxes[..., 2:] <= side).all()
        assert torch.equal(boxes[..., 2] - boxes[..., 0], torch.full(boxes.shape[:-1], 10.0))
    # labels of one centre are distinct
    assert all(len(set(row)) == 3 for row in labels.tolist())
    delta = other[..., :2] - centre[:, None, :2]  # (dx, dy)
    offsets = torch.tensor(NEIGHBOUR_OFFSETS)[labels]  # (dy, dx)
    expected = offsets.flip(-1) * grid.pitch
    residual = delta - expected  # the two patches' jitters: each at most `jitter`
    assert residual.abs().max() <= 2 * grid.jitter
    assert residual.abs().max() == 2 * grid.jitter  # the bound is reached over 1500 pairs
    # along the offset's axis the patches never come closer than gap - 2 * jitter
    gap_x = (delta[..., 0].abs() - grid.patch)[offsets[..., 1] != 0]
    assert gap_x.min() >= grid.gap - 2 * grid.jitter


def test_labels_round_trip_through_box_geometry():
    grid = PatchGrid(patch=22, gap=10, jitter=3)
    centre, other, labels = grid.sample(200, 96, torch.Generator().manual_seed(1), per_centre=8)
    recovered = labels_from_boxes(centre.repeat_interleave(8, 0), other.reshape(-1, 4), grid)
    assert torch.equal(recovered, labels.reshape(-1))
    assert sorted(labels[0].tolist()) == list(range(8))


def test_grid_refuses_images_too_small_and_bad_jitter():
    with pytest.raises(ValueError, match="cannot hold"):
        PatchGrid(10, 5, 2).sample(1, 43, torch.Generator())
    with pytest.raises(ValueError, match="jitter"):
        PatchGrid(10, 2, 3)


def test_colour_dropping_keeps_one_channel_and_fills_the_others_with_the_mean():
    patches = torch.rand(64, 3, 8, 8)
    mean = (0.4, 0.5, 0.6)
    out = context.drop_colours(patches, mean, torch.Generator().manual_seed(0))
    for i in range(64):
        kept = [c for c in range(3) if torch.equal(out[i, c], patches[i, c])]
        assert len(kept) == 1
        for c in set(range(3)) - set(kept):
            assert abs(out[i, c].mean().item() - mean[c]) < 0.01
            assert out[i, c].std() < patches[i, kept[0]].std() / 20


def test_green_magenta_projection_removes_that_axis_only():
    grey_plus_green = torch.tensor([0.5, 0.7, 0.5]).view(1, 3, 1, 1)
    grey_plus_red_blue = torch.tensor([0.6, 0.5, 0.4]).view(1, 3, 1, 1)  # orthogonal to (-1, 2, -1)
    projected = context.project_green_magenta(torch.cat([grey_plus_green, grey_plus_red_blue]))
    v = context.GREEN_MAGENTA.view(1, 3, 1, 1)
    assert ((projected - 0.5) * v).sum(1).abs().max() < 1e-6
    assert torch.allclose(projected[1], grey_plus_red_blue[0])


def test_downsampling_blurs_the_chosen_patches_only():
    patches = torch.rand(200, 3, 32, 32)
    out = context.downsample_some(patches, 0.5, 4, torch.Generator().manual_seed(0))
    changed = (out - patches).flatten(1).abs().amax(1) > 1e-6
    assert 60 < changed.sum() < 140
    assert out[changed].std() < patches[changed].std() / 2  # detail gone


def test_unknown_setting_is_refused(tiny_world):
    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tiny_world, "alexnet-small", config={"epoch": 1})
    with pytest.raises(ValueError, match="unknown settings"):
        context.pretrain(ctx)


def test_tiny_pretraining_gives_a_loadable_representation(tiny_world, tmp_path):
    built = {}

    def factory(in_channels=3):  # remembers the initial weights of the trunk it hands out
        from benchharness.backbones import build
        built["net"] = build("alexnet-small", in_channels)
        built["init"] = {k: v.clone() for k, v in built["net"].state_dict().items()}
        return built["net"]

    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path, "alexnet-small",
                     config={"steps": 2, "batch_size": 8, "eval_grids": 1}, backbone_factory=factory)
    rep = context.pretrain(ctx)
    assert rep.network is built["net"]
    assert rep.learned_stages == ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6")
    state = rep.network.state_dict()
    for stage in ("conv1", "fc6"):  # trained by the pretext
        assert not torch.equal(state[f"{stage}.{'conv' if stage == 'conv1' else 'fc'}.weight"],
                               built["init"][f"{stage}.{'conv' if stage == 'conv1' else 'fc'}.weight"])
    assert torch.equal(state["fc7.fc.weight"], built["init"]["fc7.fc.weight"])  # never used
    pretext = rep.meta["pretext"]
    assert pretext["metric"] == "8-way-accuracy" and pretext["chance"] == 0.125
    assert 0.0 <= pretext["value"] <= 1.0 and pretext["held_out_pairs"] == 8 * 10  # 10% of 100
    loaded = Representation.load(rep.save(tmp_path / "rep"))
    assert loaded.input.mode == "rgb" and loaded.learned_stages == rep.learned_stages
    for key, value in state.items():
        assert torch.equal(loaded.network.state_dict()[key], value)


def test_method_is_registered_through_its_entry_point():
    registry = Registry()
    assert registry.sources["context"].startswith("entry point benchharness_plugins.context")
    method = registry.methods()["context"]
    assert method.group == "self-sup" and method.needs == ("images",)


def test_pretext_pool_is_decoded_once_and_cached(tiny_world, tmp_path):
    from benchharness.data.loading.pretext_pool import default_image_dirs, load_images
    dirs = default_image_dirs(tiny_world)
    first = load_images(dirs, 24, cache_dir=tmp_path)
    cached = list((tmp_path / "images").glob("pretext-pool-24-*.npy"))
    assert len(cached) == 1
    again = load_images(dirs, 24, cache_dir=tmp_path)
    assert torch.equal(first, again) and torch.equal(first, load_images(dirs, 24))
    load_images(dirs, 20, cache_dir=tmp_path)  # another size is another file
    assert len(list((tmp_path / "images").glob("pretext-pool-*.npy"))) == 2


def test_restoring_stage_scales_changes_outputs_only_by_a_factor_per_stage():
    from benchharness.backbones import STAGES, build
    from benchharness.data.loading.pretext_pool import restore_stage_scales, stage_rms
    torch.manual_seed(0)
    reference, net = build("alexnet-small"), build("alexnet-small")
    with torch.no_grad():  # a trained trunk whose scale drifted: shrink conv2, blow up conv4
        for stage, factor in (("conv2", 0.1), ("conv4", 7.0)):
            layer = net.stage(stage).conv
            layer.weight.mul_(factor)
            layer.bias.mul_(factor)
    x = torch.randn(16, 3, 64, 64)
    with torch.no_grad():
        before = {s: net.forward_to(x, s).clone() for s in STAGES}
    fc7_weight = net.fc7.fc.weight.clone()
    learned = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6")
    info = restore_stage_scales(net, reference, x, learned)
    rms, target = stage_rms(net, x), stage_rms(reference, x)
    with torch.no_grad():
        for stage in learned:
            assert rms[stage] == pytest.approx(target[stage], rel=1e-4)
            after = net.forward_to(x, stage)
            factor = info["factors"][stage]
            # float32 rounding scales with the stage's largest activations, not with each
            # element (a ReLU output that is 0 before may be 2e-5 after on some CPUs)
            atol = 1e-6 * float(after.abs().max())
            assert factor > 0 and torch.allclose(after, factor * before[stage], rtol=1e-4, atol=atol)
    assert info["factors"]["conv2"] > 5  # the shrunk stage was scaled back up
    assert torch.equal(net.fc7.fc.weight, fc7_weight)  # an unlearned stage is left alone


def test_patch_input_too_small_for_the_trunk_is_refused(tiny_world, tmp_path):
    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path, "alexnet-small",
                     config={"patch_input": 16, "steps": 1})
    with pytest.raises(ValueError, match="patch_input 16 is too small"):
        context.pretrain(ctx)


def killed_after(steps: int):
    """A progress reporter that stops a pretraining loop (as a kill would) before step ``steps``."""
    def progress(iterable, desc="", **_):
        if not desc.startswith("pretrain"):
            return iterable

        def run():
            for i, item in enumerate(iterable):
                if i == steps:
                    raise KeyboardInterrupt("killed")
                yield item
        return run()
    return progress


def test_pretraining_resumes_from_its_checkpoint(tiny_world, tmp_path):
    cfg = {"steps": 3, "batch_size": 4, "eval_grids": 1, "checkpoint_every": 2}

    def ctx(state, progress=None, log=print):
        return RunContext(torch.device("cpu"), 0, tiny_world, tmp_path / "cache", "alexnet-small",
                          config=cfg, state_dir=state, progress=progress, log=log)

    full = context.pretrain(ctx(tmp_path / "a"))
    with pytest.raises(KeyboardInterrupt):
        context.pretrain(ctx(tmp_path / "b", killed_after(2)))  # after the step-2 checkpoint
    assert (tmp_path / "b" / "progress.pt").is_file()
    logs = []
    resumed = context.pretrain(ctx(tmp_path / "b", log=logs.append))
    assert any("resuming context pretraining at step 3" in line for line in logs)
    for key, value in full.network.state_dict().items():
        assert torch.allclose(value, resumed.network.state_dict()[key], atol=1e-5), key
    assert resumed.meta["pretext"]["value_at_init"] == full.meta["pretext"]["value_at_init"]  # the fresh network's
