"""Context encoders (inpainting): masks, the masked loss, the channel-wise fc, a tiny pretraining."""

from __future__ import annotations

import pytest
import torch

from benchharness.interfaces import RunContext
from benchharness.plugins import Registry
from benchharness.representation import Representation
from benchharness_plugins import inpainting
from benchharness_plugins.inpainting.masks import mask_input, masked_l2, random_block_masks
from benchharness_plugins.inpainting.network import ChannelWiseFC, ContextEncoder, Discriminator

TINY = {"steps": 3, "batch_size": 4, "decoder_width": 4, "disc_width": 4, "checkpoint_every": 2}


def _ctx(world, tmp_path, config, progress=None, log=print, state="state"):
    return RunContext(torch.device("cpu"), 0, world, tmp_path / "cache", "alexnet-small", config=config,
                      state_dir=tmp_path / state, progress=progress, log=log)


def test_masked_l2_by_hand_counts_only_masked_pixels():
    target = torch.zeros(1, 3, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # two of four pixels removed
    prediction = torch.zeros(1, 3, 2, 2)
    prediction[0, :, 0, 0] = torch.tensor([1.0, 2.0, 3.0])  # masked: errors 1, 4, 9
    prediction[0, :, 1, 1] = 2.0  # masked: 4, 4, 4
    # (1 + 4 + 9 + 12) / (2 pixels x 3 channels)
    assert masked_l2(prediction, target, mask).item() == pytest.approx(26 / 6)
    changed = prediction.clone()
    changed[0, :, 0, 1] = 100.0  # unmasked pixels: whatever is predicted there does not count
    changed[0, :, 1, 0] = -7.0
    assert masked_l2(changed, target, mask).item() == pytest.approx(26 / 6)


def test_masked_l2_gradient_is_zero_outside_the_mask():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    masks = random_block_masks(2, 16, g)
    prediction = torch.rand(2, 3, 16, 16, generator=g, requires_grad=True)
    masked_l2(prediction, x, masks).backward()
    outside = (masks == 0).expand_as(x)
    assert prediction.grad[outside].abs().max() == 0
    assert prediction.grad[~outside].abs().min() > 0


def test_random_block_masks_cover_a_quarter_and_are_seeded():
    masks = random_block_masks(50, 64, torch.Generator().manual_seed(1))
    assert masks.shape == (50, 1, 64, 64) and set(masks.unique().tolist()) == {0.0, 1.0}
    share = masks.mean((1, 2, 3))
    assert (share >= 0.25).all() and (share < 0.25 + 0.375 ** 2 + 1e-6).all()  # at most one block past
    again = random_block_masks(50, 64, torch.Generator().manual_seed(1))
    assert torch.equal(masks, again)
    with pytest.raises(ValueError, match="coverage"):
        random_block_masks(1, 64, torch.Generator(), coverage=1.0)


def test_mask_input_fills_removed_pixels_with_the_fill_colour_and_keeps_the_rest():
    x = torch.rand(1, 3, 8, 8)
    masks = torch.zeros(1, 1, 8, 8)
    masks[..., 2:5, 3:6] = 1
    fill = torch.tensor([0.1, -0.2, 0.3])
    out = mask_input(x, masks, fill)
    assert torch.equal(out[..., 2:5, 3:6], fill.view(1, 3, 1, 1).expand(1, 3, 3, 3))
    keep = (masks == 0).expand_as(x)
    assert torch.equal(out[keep], x[keep])


def test_channel_wise_fc_has_per_channel_weights_and_no_cross_channel_terms():
    layer = ChannelWiseFC(channels=4, side=3)
    assert layer.weight.shape == (4, 9, 9) and layer.bias.shape == (4, 9)  # m n^4 weights
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        out = layer(x)
        bumped = x.clone()
        bumped[:, 2] += torch.randn(2, 3, 3)  # change channel 2 only
        out_bumped = layer(bumped)
    assert torch.equal(out[:, [0, 1, 3]], out_bumped[:, [0, 1, 3]])  # other channels untouched
    assert not torch.allclose(out[:, 2], out_bumped[:, 2])
    # each channel is a full linear map of its own n x n map, as an independent computation
    expected = x[:, 1].reshape(2, 9) @ layer.weight[1] + layer.bias[1]
    torch.testing.assert_close(out[:, 1].reshape(2, 9), expected)
    # and connects every position to every other one (not a convolution)
    assert (layer.weight[1] != 0).all()
    with pytest.raises(ValueError, match="3 x 3"):
        layer(torch.randn(1, 4, 4, 4))


@pytest.mark.parametrize("backbone, size", [("alexnet-small", 64), ("caffenet", 227)])
def test_context_encoder_predicts_an_image_of_the_input_size(backbone, size):
    from benchharness.backbones import build
    net = ContextEncoder(build(backbone), size, decoder_width=2).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, size, size))
    assert out.shape == (1, 3, size, size) and out.abs().max() <= 1  # tanh: the [-1, 1] scale
    assert Discriminator(size, 4)(out).shape == (1,)


def test_settings_errors_name_the_setting(tiny_world, tmp_path):
    for config, match in (({"lambda": 1}, "unknown settings"), ({"lambda_rec": 0}, "lambda_rec"),
                          ({"steps": 0}, "steps")):
        with pytest.raises(ValueError, match=match):
            inpainting.pretrain(_ctx(tiny_world, tmp_path, config))


def test_tiny_pretraining_gives_a_loadable_representation_with_its_pretext(tiny_world, tmp_path):
    rep = inpainting.pretrain(_ctx(tiny_world, tmp_path, TINY))
    assert rep.learned_stages == ("conv1", "conv2", "conv3", "conv4", "conv5")
    pretext = rep.meta["pretext"]
    assert "lower is better" in pretext["metric"]
    for key in ("value", "value_at_init", "chance", "chance_visible_mean"):
        assert pretext[key] > 0, key
    assert pretext["held_out_images"] == 10 and 0.25 <= pretext["masked_share"] < 0.4
    assert rep.meta["adversarial"] is True
    loaded = Representation.load(rep.save(tmp_path / "rep"))
    assert loaded.input == inpainting.CONVENTION and loaded.learned_stages == rep.learned_stages


def test_pretraining_resumes_from_its_checkpoint(tiny_world, tmp_path):
    from test_context import killed_after
    full = inpainting.pretrain(_ctx(tiny_world, tmp_path, TINY, state="a"))
    with pytest.raises(KeyboardInterrupt):
        inpainting.pretrain(_ctx(tiny_world, tmp_path, TINY, progress=killed_after(2), state="b"))
    logs = []
    resumed = inpainting.pretrain(_ctx(tiny_world, tmp_path, TINY, log=logs.append, state="b"))
    assert any("resuming inpainting pretraining at step 3" in line for line in logs)
    for key, value in full.network.state_dict().items():
        assert torch.allclose(value, resumed.network.state_dict()[key], atol=1e-5), key
    for key in ("value", "value_at_init", "chance"):
        assert resumed.meta["pretext"][key] == pytest.approx(full.meta["pretext"][key], rel=1e-4), key


def test_method_is_registered_through_its_entry_point():
    registry = Registry()
    assert registry.sources["inpainting"].startswith("entry point benchharness_plugins.inpainting")
    method = registry.methods()["inpainting"]
    assert method.group == "self-sup" and method.needs == ("images",)
