"""The BiGAN method plugin: its networks, losses, settings and a short pretraining run."""

from __future__ import annotations

import math

import pytest
import torch

from benchharness.backbones import STAGES, build
from benchharness.interfaces import RunContext
from benchharness.plugins import Registry
from benchharness.representation import Representation
from benchharness_plugins import bigan

TINY = {"steps": 3, "batch_size": 4, "generator_size": 16, "gen_channels": 8, "disc_channels": 8,
        "disc_hidden": 32, "z_dim": 8, "checkpoint_every": 2}


def _ctx(world, config, tmp_path=None):
    return RunContext(device=torch.device("cpu"), seed=0, data_root=world, cache_dir=world / "cache",
                      backbone="alexnet-small", config=config,
                      state_dir=tmp_path / "state" if tmp_path else None)


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_generator_and_discriminator_shapes(size):
    g = bigan.Generator(z_dim=5, size=size, channels=4)
    z = bigan.sample_z(3, 5, torch.Generator().manual_seed(0))
    assert z.min() >= -1 and z.max() <= 1
    x = g(z)
    assert x.shape == (3, 3, size, size)
    assert x.abs().max() <= 1  # tanh output, the [-1, 1] input scale
    d = bigan.JointDiscriminator(z_dim=5, size=size, channels=4, hidden=16, dropout=0.0)
    assert d(x, z).shape == (3,)


def test_discriminator_takes_z_at_every_linear_layer():
    d = bigan.JointDiscriminator(z_dim=7, size=16, channels=4, hidden=16, dropout=0.0).eval()
    assert [layer.in_features for layer in d.joint] == [8 * 16 + 7, 16 + 7, 16 + 7]
    x = torch.randn(2, 3, 16, 16)
    z = torch.rand(2, 7)
    # the last layer alone sees z: zeroing every other path leaves a function of z only
    with torch.no_grad():
        for layer in d.joint[:-1]:
            layer.weight.zero_()
            layer.bias.zero_()
    with torch.no_grad():
        out_a, out_b = d(x, z), d(x, z + 0.5)
        expected = d.joint[-1].weight[0, -7:] @ (0.5 * torch.ones(7))
    assert torch.allclose(out_b - out_a, expected.expand(2), atol=1e-6)


class ConstantD:
    """A stand-in discriminator giving logit ``real`` to (x, E(x)) pairs and ``fake`` to the rest."""

    def __init__(self, real: float, fake: float, x_real: torch.Tensor):
        self.real, self.fake, self.x_real = real, fake, x_real

    def __call__(self, x, z):
        value = self.real if x is self.x_real else self.fake
        return torch.full((len(x),), value) + 0 * z.sum(1)


def test_losses_match_hand_computation():
    x, z_hat = torch.zeros(4, 3, 8, 8), torch.zeros(4, 2, requires_grad=True)
    x_fake, z = torch.ones(4, 3, 8, 8), torch.zeros(4, 2)
    d = ConstantD(real=2.0, fake=-1.0, x_real=x)
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731  -log(sigmoid(-v))
    # D: (x, E(x)) real -> -log sigmoid(2); (G(z), z) fake -> -log(1 - sigmoid(-1))
    assert bigan.discriminator_loss(d, x, z_hat, x_fake, z).item() == pytest.approx(
        0.5 * (softplus(-2.0) + softplus(-1.0)))
    # E/G, labels inverted: (x, E(x)) fake -> -log(1 - sigmoid(2)); (G(z), z) real -> -log sigmoid(-1)
    assert bigan.encoder_generator_loss(d, x, z_hat, x_fake, z).item() == pytest.approx(
        0.5 * (softplus(2.0) + softplus(1.0)))
    # at D's indifference (logit 0 everywhere) both are log 2
    d0 = ConstantD(0.0, 0.0, x)
    assert bigan.discriminator_loss(d0, x, z_hat, x_fake, z).item() == pytest.approx(math.log(2))


def test_discriminator_loss_does_not_reach_encoder_or_generator():
    enc_out = torch.rand(4, 3, requires_grad=True)
    gen_out = torch.rand(4, 3, 8, 8, requires_grad=True)
    d = bigan.JointDiscriminator(z_dim=3, size=8, channels=2, hidden=4, dropout=0.0)
    bigan.discriminator_loss(d, torch.rand(4, 3, 8, 8), enc_out, gen_out, torch.rand(4, 3)).backward()
    assert enc_out.grad is None and gen_out.grad is None
    assert d.joint[0].weight.grad is not None


def test_downsampling_for_the_generalised_bigan():
    x = torch.rand(2, 3, 64, 64)
    assert bigan.to_generator_size(x, 64) is x
    small = bigan.to_generator_size(x, 32)
    assert small.shape == (2, 3, 32, 32)
    assert torch.allclose(bigan.to_generator_size(torch.full((1, 3, 64, 64), 0.3), 32),
                          torch.full((1, 3, 32, 32), 0.3))


def test_settings_are_checked(tiny_world):
    with pytest.raises(ValueError, match="unknown settings"):
        bigan.pretrain(_ctx(tiny_world, {"stepz": 3}))
    with pytest.raises(ValueError, match="power of two"):
        bigan.pretrain(_ctx(tiny_world, {"generator_size": 24}))
    with pytest.raises(ValueError, match="exceeds encoder_size"):
        bigan.pretrain(_ctx(tiny_world, {"generator_size": 128}))


def test_registered_as_unsupervised_method():
    registry = Registry()  # found through the benchharness entry-point group
    assert registry.sources["bigan"].startswith("entry point benchharness_plugins.bigan")
    method = registry.get("methods", "bigan")
    assert method.group == "unsup" and method.needs == ("images",)


def test_short_pretraining_gives_a_saveable_representation(tiny_world, tmp_path):
    rep = bigan.pretrain(_ctx(tiny_world, TINY, tmp_path))
    assert rep.learned_stages == STAGES
    assert rep.input.mode == "rgb" and rep.input.mean == (0.5,) * 3 and rep.input.std == (0.5,) * 3
    pretext = rep.meta["pretext"]
    assert "lower is better" in pretext["metric"]
    for key in ("value", "chance", "value_at_init", "random_z", "shuffled"):
        assert math.isfinite(pretext[key]) and 0 <= pretext[key] <= 4  # MSE of [-1, 1] images
    assert pretext["held_out_images"] >= 1
    assert rep.meta["encoder_size"] == 64 and rep.meta["generator_size"] == 16
    assert (tmp_path / "state" / "progress.pt").is_file()
    loaded = Representation.load(rep.save(tmp_path / "rep"))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        # the trained trunk is still channels_last (another convolution algorithm than the
        # loaded, contiguous one): equal to float32 rounding
        torch.testing.assert_close(loaded.network(x), rep.network.eval()(x), rtol=1e-4, atol=1e-5)


def test_pretraining_resumes_from_its_checkpoint(tiny_world, tmp_path):
    full = bigan.pretrain(_ctx(tiny_world, TINY, tmp_path / "a"))
    # stop after the checkpoint at step 2, then resume to step 3
    bigan.pretrain(_ctx(tiny_world, {**TINY, "steps": 2}, tmp_path / "b"))
    logs = []
    ctx = _ctx(tiny_world, TINY, tmp_path / "b")
    ctx.log = logs.append
    resumed = bigan.pretrain(ctx)
    assert any("resuming bigan pretraining at step 3" in line for line in logs)
    for key, value in full.network.state_dict().items():
        assert torch.allclose(value, resumed.network.state_dict()[key], atol=1e-5), key
    assert resumed.meta["pretext"]["value_at_init"] == full.meta["pretext"]["value_at_init"]  # the fresh network's


def test_encoder_reaches_z_through_fc7():
    enc = bigan.Encoder(build("alexnet-small"), z_dim=6)
    x = torch.rand(2, 3, 64, 64)
    assert enc(x).shape == (2, 6)
    enc(x).sum().backward()
    assert all(enc.trunk.stage(s).parameters().__next__().grad is not None for s in STAGES)


class RecordingD:
    """A stand-in discriminator that records every (x, z) pair it is shown."""

    def __init__(self):
        self.seen = []

    def __call__(self, x, z):
        self.seen.append((x, z))
        return torch.zeros(len(x)) + 0 * z.sum(1) + 0 * x.flatten(1).sum(1)


def test_discriminator_sees_x_with_its_code_as_real_and_generated_x_with_z_as_fake():
    x, z_hat = torch.rand(4, 3, 8, 8), torch.rand(4, 2)
    x_fake, z = torch.rand(4, 3, 8, 8), torch.rand(4, 2)
    for loss in (bigan.discriminator_loss, bigan.encoder_generator_loss):
        d = RecordingD()
        loss(d, x, z_hat, x_fake, z)
        (real_x, real_z), (fake_x, fake_z) = d.seen
        assert torch.equal(real_x, x) and torch.equal(real_z, z_hat)  # (x, E(x))
        assert torch.equal(fake_x, x_fake) and torch.equal(fake_z, z)  # (G(z), z)
    # and the labels: pushing D's logit up on the first pair lowers D's loss (it is "real")
    real_logit = torch.zeros(4, requires_grad=True)

    def d_real_up(xx, zz):
        return real_logit if xx is x else torch.zeros(len(xx))
    bigan.discriminator_loss(d_real_up, x, z_hat, x_fake, z).backward()
    assert (real_logit.grad < 0).all()


def test_encoder_code_starts_at_the_prior_scale():
    enc = bigan.Encoder(build("alexnet-small"), z_dim=10)
    x = torch.randn(64, 3, 64, 64)
    enc.init_to_prior(x)
    with torch.no_grad():
        z = enc(x)
    assert torch.allclose(z.mean(0), torch.zeros(10), atol=1e-4)
    assert torch.allclose(z.std(0), torch.full((10,), 3 ** -0.5), atol=1e-4)


def test_folding_batch_norm_keeps_the_encoder_function():
    torch.manual_seed(0)
    enc = bigan.Encoder(build("alexnet-small"), z_dim=5, batch_norm=True)
    assert set(enc.norms) == set(STAGES[1:])
    opt = torch.optim.SGD(enc.parameters(), lr=0.1)
    for _ in range(3):  # move the norms' statistics and affine parameters off their defaults
        loss = enc(torch.randn(8, 3, 64, 64)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randn(4, 3, 64, 64)
    enc.eval()
    with torch.no_grad():
        before, fc7_before = enc(x), enc.trunk(x)
        enc.fold_batch_norm()
        assert len(enc.norms) == 0
        assert torch.allclose(enc(x), before, atol=1e-4)
        assert torch.allclose(enc.trunk(x), fc7_before, atol=1e-4)  # the trunk alone, plain AlexNet
    assert set(enc.trunk.state_dict()) == set(build("alexnet-small").state_dict())


def test_untrained_baseline_codes_take_the_trained_codes_moments():
    torch.manual_seed(0)
    enc = bigan.Encoder(build("alexnet-small"), z_dim=4).eval()
    x = torch.randn(300, 3, 64, 64)
    mix = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.3, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.1, 0.0, 0.0, 0.4]])
    target = torch.rand(300, 4) @ mix + torch.tensor([0.5, -0.2, 0.0, 0.1])
    enc.match_codes(x, target)
    with torch.no_grad():
        z = enc(x)
    assert torch.allclose(z.mean(0), target.mean(0), atol=1e-3)
    assert torch.allclose(torch.cov(z.T), torch.cov(target.T), atol=2e-3)
