"""Colorization: Lab conversion, ab quantisation, soft encoding, rebalancing, a tiny pretraining."""

from __future__ import annotations

import pytest
import torch

from benchharness.interfaces import RunContext
from benchharness.plugins import Registry
from benchharness.representation import InputConvention, Representation
from benchharness_plugins import colorization
from benchharness_plugins.colorization.lab import ABQuantizer, in_gamut_bins, rgb_to_lab


def test_lab_of_known_colours():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    lab = rgb_to_lab(rgb.T[None, :, :, None])[0, :, :, 0].T
    assert torch.allclose(lab[0], torch.tensor([100.0, 0.0, 0.0]), atol=0.05)  # white
    assert torch.allclose(lab[1], torch.tensor([0.0, 0.0, 0.0]), atol=0.05)  # black
    assert torch.allclose(lab[2], torch.tensor([53.24, 80.09, 67.20]), atol=0.2)  # sRGB red
    assert abs(lab[3, 0] - 53.39) < 0.05 and lab[3, 1:].abs().max() < 0.05  # mid grey


def test_in_gamut_bins_cover_the_srgb_ab_range():
    centres = in_gamut_bins()
    assert 250 <= len(centres) <= 320  # the paper reports 313
    assert torch.equal(centres, torch.round(centres / 10) * 10)  # on the grid of size 10
    assert centres[:, 0].min() == -90 and centres[:, 0].max() == 100
    assert centres[:, 1].min() == -110 and centres[:, 1].max() == 90
    assert (centres == torch.tensor([0.0, 0.0])).all(1).any()
    assert not (centres == torch.tensor([-100.0, -100.0])).all(1).any()  # no sRGB colour there


def test_bin_centre_round_trips_and_known_colour_encodes_to_its_nearest_bin():
    q = ABQuantizer()
    ab = q.centres.T[None, :, :, None]  # every centre as a 1 x Q image
    index = q.encode(ab)[0, :, 0]
    assert torch.equal(index, torch.arange(q.q))
    assert torch.equal(q.decode(index), q.centres)
    red_ab = torch.tensor([80.09, 67.20]).view(1, 2, 1, 1)
    assert q.decode(q.encode(red_ab)).flatten().tolist() == [80.0, 70.0]


def test_soft_encoding_sums_to_one_on_the_nearest_bins():
    q = ABQuantizer()
    ab = torch.tensor([[3.0, 0.0], [0.0, 0.0], [24.0, -36.0]]).T[None, :, :, None]
    soft = q.soft_encode(ab, neighbours=5, sigma=5.0)[0, :, :, 0].T  # [3, Q]
    assert torch.allclose(soft.sum(1), torch.ones(3))
    assert ((soft > 0).sum(1) == 5).all()
    for i, point in enumerate(ab[0, :, :, 0].T):
        distances = (q.centres - point).norm(dim=1)
        nearest = distances.argsort()[:5]
        assert set(soft[i].nonzero().flatten().tolist()) == set(nearest.tolist())
        assert soft[i].argmax() == nearest[0]
    # (3, 0): Gaussian weights of distances 3 and 7 to (0, 0) and (10, 0)
    zero, ten = (q.centres == torch.tensor([0.0, 0.0])).all(1), (q.centres == torch.tensor([10.0, 0.0])).all(1)
    ratio = soft[0][zero] / soft[0][ten]
    assert torch.allclose(ratio, torch.exp(torch.tensor((49.0 - 9.0) / 50.0)), rtol=1e-4)


@pytest.mark.parametrize("sigma", [0.0, 5.0])
def test_rebalancing_weights_have_unit_expectation_under_the_prior(sigma):
    q = ABQuantizer()
    prior = torch.rand(q.q, generator=torch.Generator().manual_seed(0)) ** 8
    w = q.rebalance_weights(prior, lam=0.5, sigma=sigma)
    smoothed = q.smooth(prior / prior.sum(), sigma) if sigma else prior / prior.sum()
    assert torch.allclose((smoothed * w).sum(), torch.tensor(1.0), atol=1e-5)
    assert w[smoothed.argmax()] == w.min()  # rare colours weigh more
    uniform = q.rebalance_weights(torch.ones(q.q), lam=0.5, sigma=0.0)
    assert torch.allclose(uniform, torch.ones(q.q))


def test_lab_l_convention_feeds_exactly_the_training_input():
    rgb = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    l_train, _ = colorization.lab_batch(rgb, (4, 4))
    expected = (rgb_to_lab(rgb)[:, :1] - 50.0) / 50.0
    assert torch.allclose(l_train, expected, atol=1e-5)
    stored = InputConvention(**{"mode": "lab-l", "mean": (50.0,), "std": (50.0,)})
    assert stored == colorization.CONVENTION
    assert torch.equal(stored.normalise(rgb), l_train)


def test_unknown_setting_is_refused(tiny_world):
    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tiny_world, "alexnet-small", config={"lambda": 1})
    with pytest.raises(ValueError, match="unknown settings"):
        colorization.pretrain(ctx)


def test_tiny_pretraining_gives_a_loadable_lab_representation(tiny_world, tmp_path):
    built = {}

    def factory(in_channels=3):
        from benchharness.backbones import build
        built["net"] = build("alexnet-small", in_channels)
        built["init"] = {k: v.clone() for k, v in built["net"].state_dict().items()}
        return built["net"]

    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path, "alexnet-small",
                     config={"steps": 2, "batch_size": 8}, backbone_factory=factory)
    rep = colorization.pretrain(ctx)
    assert rep.learned_stages == ("conv1", "conv2", "conv3", "conv4", "conv5")
    state = rep.network.state_dict()
    assert state["conv1.conv.weight"].shape[1] == 1
    assert not torch.equal(state["conv5.conv.weight"], built["init"]["conv5.conv.weight"])
    for key in ("fc6.fc.weight", "fc7.fc.weight"):  # not part of the pretext network
        assert torch.equal(state[key], built["init"][key])
    pretext = rep.meta["pretext"]
    assert pretext["metric"] == "ab-bin-accuracy" and 0 < pretext["chance"] <= 1
    assert pretext["held_out_pixels"] == 10 * 7 * 7  # 10 held-out images, conv5's 7 x 7 map
    loaded = Representation.load(rep.save(tmp_path / "rep"))
    assert loaded.input == colorization.CONVENTION
    assert loaded.learned_stages == rep.learned_stages
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        # the trained trunk is still channels_last (another convolution algorithm than the
        # loaded, contiguous one): equal to float32 rounding
        torch.testing.assert_close(loaded.network(loaded.input.normalise(x)),
                                   rep.network(rep.input.normalise(x)), rtol=1e-4, atol=1e-5)


def test_method_is_registered_through_its_entry_point():
    registry = Registry()
    assert registry.sources["colorization"].startswith("entry point benchharness_plugins.colorization")
    method = registry.methods()["colorization"]
    assert method.group == "self-sup" and method.needs == ("images",)


def test_pretraining_resumes_from_its_checkpoint(tiny_world, tmp_path):
    from test_context import killed_after
    cfg = {"steps": 3, "batch_size": 4, "checkpoint_every": 2}

    def ctx(state, progress=None, log=print):
        return RunContext(torch.device("cpu"), 0, tiny_world, tmp_path / "cache", "alexnet-small",
                          config=cfg, state_dir=state, progress=progress, log=log)

    full = colorization.pretrain(ctx(tmp_path / "a"))
    with pytest.raises(KeyboardInterrupt):
        colorization.pretrain(ctx(tmp_path / "b", killed_after(2)))
    logs = []
    resumed = colorization.pretrain(ctx(tmp_path / "b", log=logs.append))
    assert any("resuming colorization pretraining at step 3" in line for line in logs)
    for key, value in full.network.state_dict().items():
        assert torch.allclose(value, resumed.network.state_dict()[key], atol=1e-5), key
    assert resumed.meta["pretext"]["value_at_init"] == full.meta["pretext"]["value_at_init"]  # the fresh network's
    pretext = full.meta["pretext"]
    assert pretext["top5"] >= pretext["value"] and pretext["chance_top5"] >= pretext["chance"]
    assert 0 <= pretext["value_coloured"] <= 1 and 0 <= pretext["coloured_share"] <= 1
