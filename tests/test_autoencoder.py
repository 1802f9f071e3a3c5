"""The autoencoder (BiGAN's baseline): its l2 / l1 loss on hand-made images, the decoder's
shape, settings, the held-out pretext, a resumed pretraining and an end-to-end run."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from benchharness.backbones import STAGES, build
from benchharness.cli import main
from benchharness.interfaces import RunContext
from benchharness.plugins import Registry
from benchharness.representation import Representation
from benchharness_plugins import autoencoder
from benchharness_plugins.autoencoder.network import Autoencoder, Decoder, reconstruction_loss

TINY = {"steps": 3, "batch_size": 4, "z_dim": 8, "decoder_channels": 4, "checkpoint_every": 1}


def _ctx(world, tmp_path, config, progress=None, log=print, state="state"):
    return RunContext(torch.device("cpu"), 0, world, tmp_path / "cache", "alexnet-small", config=config,
                      state_dir=tmp_path / state, progress=progress, log=log)


def test_l2_and_l1_losses_match_a_hand_computation():
    target = torch.zeros(1, 1, 2, 2)
    prediction = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]]]])
    # errors 1, -2, 0, 3: squares 1 + 4 + 0 + 9 = 14, absolute 1 + 2 + 0 + 3 = 6, over 4 pixels
    assert reconstruction_loss(prediction, target, "l2").item() == pytest.approx(14 / 4)
    assert reconstruction_loss(prediction, target, "l1").item() == pytest.approx(6 / 4)
    assert reconstruction_loss(target, target, "l2").item() == 0
    with pytest.raises(ValueError, match="loss must be one of"):
        reconstruction_loss(prediction, target, "l3")


@pytest.mark.parametrize("size", [8, 32, 64])
def test_decoder_output_has_the_input_shape(size):
    net = Autoencoder(build("alexnet-small"), z_dim=6, decoder_size=size, decoder_channels=2).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 3, size, size) and out.abs().max() <= 1  # tanh: the [-1, 1] scale
    with pytest.raises(ValueError, match="power of two"):
        Decoder(6, 48, 2)


def test_default_decoder_size_is_the_largest_power_of_two_within_the_input(tiny_world, tmp_path):
    ctx = _ctx(tiny_world, tmp_path, {})
    assert autoencoder._settings(ctx, 64)["decoder_size"] == 64
    assert autoencoder._settings(ctx, 227)["decoder_size"] == 128  # caffenet


def test_every_trunk_stage_gets_the_reconstruction_gradient():
    net = Autoencoder(build("alexnet-small"), z_dim=6, decoder_size=16, decoder_channels=2)
    x = torch.rand(2, 3, 64, 64)
    reconstruction_loss(net(x), x[..., ::4, ::4], "l2").backward()
    for stage in STAGES:
        assert next(net.trunk.stage(stage).parameters()).grad.abs().sum() > 0, stage


def test_settings_errors_name_the_setting(tiny_world, tmp_path):
    for config, match in (({"stepz": 3}, "unknown settings"), ({"loss": "l3"}, "loss must be"),
                          ({"steps": 0}, "steps"), ({"decoder_size": 128}, "exceeds"),
                          ({"decoder_size": 24}, "power of two")):
        with pytest.raises(ValueError, match=match):
            autoencoder.pretrain(_ctx(tiny_world, tmp_path, config))


def test_pretext_chance_is_the_error_of_the_mean_image():
    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 3, 8, 8)

    images = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)  # white: +1 in the [-1, 1] scale
    images[1] = 0                                                # black: -1
    mean_image = torch.full((3, 8, 8), 0.5)
    cfg = {"decoder_size": 8, "loss": "l2"}
    p = autoencoder.held_out_reconstruction(Constant(), Constant(), images, mean_image, cfg, 8)
    # predicting 0: error 1 everywhere; predicting 0.5: 0.25 on white and 2.25 on black
    assert p["value"] == pytest.approx(1.0) and p["value_at_init"] == pytest.approx(1.0)
    assert p["chance"] == pytest.approx((0.25 + 2.25) / 2)
    assert p["held_out_images"] == 2 and "lower is better" in p["metric"]


def test_tiny_pretraining_learns_and_gives_a_loadable_trunk(tiny_world, tmp_path):
    config = {**TINY, "steps": 30, "lr": 2e-3, "z_dim": 32, "decoder_channels": 8, "checkpoint_every": 30}
    rep = autoencoder.pretrain(_ctx(tiny_world, tmp_path, config))
    assert rep.learned_stages == STAGES and rep.input.mode == "rgb"
    pretext = rep.meta["pretext"]
    assert pretext["metric"] == "reconstruction-l2 (lower is better)"
    # training leaves the untrained network's figure clearly behind, and the mean image's
    # (0.109 against 0.134 at init and 0.123 chance when written)
    assert pretext["value"] < 0.9 * pretext["value_at_init"] and pretext["value"] < pretext["chance"], pretext
    assert rep.meta["loss"] == "l2" and rep.meta["decoder_size"] == 64
    loaded = Representation.load(rep.save(tmp_path / "rep"))
    assert loaded.input == autoencoder.CONVENTION and loaded.learned_stages == STAGES


def test_pretraining_resumes_after_a_kill_with_the_same_weights(tiny_world, tmp_path):
    from test_context import killed_after
    full = autoencoder.pretrain(_ctx(tiny_world, tmp_path, TINY, state="a"))
    with pytest.raises(KeyboardInterrupt):
        autoencoder.pretrain(_ctx(tiny_world, tmp_path, TINY, progress=killed_after(2), state="b"))
    logs = []
    resumed = autoencoder.pretrain(_ctx(tiny_world, tmp_path, TINY, log=logs.append, state="b"))
    assert "resuming autoencoder pretraining at step 3" in logs
    for key, value in full.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    for key in ("value", "value_at_init", "chance"):
        assert resumed.meta["pretext"][key] == pytest.approx(full.meta["pretext"][key], rel=1e-4), key


def test_method_is_registered_through_its_entry_point():
    registry = Registry()
    assert registry.sources["autoencoder"].startswith("entry point benchharness_plugins.autoencoder")
    method = registry.methods()["autoencoder"]
    assert method.group == "unsup" and method.needs == ("images",)


SUITE = """
name = "ae"
backbone = "alexnet-small"
seeds = 1
[methods]
use = ["autoencoder"]
[methods.autoencoder]
steps = 4
batch_size = 4
z_dim = 8
decoder_channels = 4
loss = "l1"
[tasks]
use = ["voc07-cls"]
[tasks.voc07-cls]
protocols = ["fc8"]
epochs = 1
batch_size = 16
test_crops = 1
"""


def test_runs_end_to_end_on_the_tiny_world(tiny_world, tmp_path):
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE)
    results = tmp_path / "results"
    out = CliRunner().invoke(main, ["run", "--suite", str(suite), "--data-root", str(tiny_world),
                                    "--results", str(results), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    (path,) = (results / "runs").rglob("*.json")
    r = json.loads(path.read_text())
    assert r["method"] == "autoencoder" and r["status"] == "ok" and 0 <= r["value"] <= 100, r
    assert r["pretext"]["metric"] == "reconstruction-l1 (lower is better)"
    assert {"value", "chance", "value_at_init"} <= set(r["pretext"]), r["pretext"]
