"""``bigan``: bidirectional GAN (Donahue, Krahenbuhl, Darrell 2017, "Adversarial Feature
Learning"), group ``unsup``.

Three networks play one game on unlabelled images:

- the encoder E is the AlexNet trunk through fc7 followed by a linear map to ``z``: the
  representation is E's trunk, so all of conv1..fc7 count as learned (the fc8 protocol then
  reads BiGAN-trained fc6/fc7 features rather than random ones). As the paper's AlexNet
  encoder, E has batch normalisation after every layer but the first while it trains; the
  norms are folded into the layers' weights at the end (``encoder_bn``), so the representation
  is a plain AlexNet trunk computing what E computed. The map to ``z`` is initialised on a batch
  of training images so that E(x) starts at the prior's scale (mean 0, std 1/sqrt(3));
- the generator G is a DCGAN-style transposed-convolution stack from ``z`` (uniform in
  [-1, 1]^d) to an image of ``generator_size`` pixels (tanh output);
- the discriminator D sees the pair (x, z): a strided-conv stack on x, then fully connected
  layers each of which takes ``[features, z]`` (z is injected at every linear layer).

D learns to call (x, E(x)) real and (G(z), z) fake; E and G are trained with the
non-saturating form of the inverted labels. Updates alternate (D, then E and G), both with Adam
(lr 2e-4, beta1 0.5). With ``encoder_size`` larger than ``generator_size`` this is the paper's
generalised BiGAN: E sees the crop at its full resolution while D receives it downsampled to
G's resolution. The default pairs E at the trunk's input size with G at 32 pixels, as the paper
paired E at 112 with G at 64; small batches (16) buy the most E updates within about 35 s on
a 2-core CPU. At the end E's stages get back the output scale they had at initialisation
(:func:`~benchharness.data.loading.pretext_pool.restore_scales_on`, one positive factor per stage).

Images are fed as RGB scaled to [-1, 1] (mean 0.5, std 0.5). The pretext measurement is the
mean squared error (in that [-1, 1] scale, at G's resolution) between held-out centre crops x
and their reconstructions G(E(x)); its chance level is the same figure with the same trained G
and an untrained encoder E0 of the same architecture (the random trunk and a linear map to z),
its map to z fitted so that its codes have the mean and covariance of the trained E's codes
(see :func:`reconstruction_pretext` for why: with a tiny random map, E0 would hand G a
constant code and "reconstruct" every image by one blurred average, a figure a pixel L2
favours and no informative encoder needs to beat). Stored beside it: ``chance_prior_scaled``,
``random_z`` (G of fresh prior samples) and ``shuffled`` (the trained E's code of another
held-out image) and ``value_at_init``, G(E(x)) of the untrained E and G before the first step.
Training does not beat that one: the untrained G draws a near-constant grey, which a pixel L2
favours for the reason above (0.135 at init against 0.198 trained on the small world, chance
0.236), so ``chance``, not ``value_at_init``, is what BiGAN's figure is judged against.
held-out image). Training state is saved every ``checkpoint_every`` steps.

The networks live in :mod:`.networks`, shared with BiGAN's GAN baselines (``bigan-d``,
``bigan-lr``, ``bigan-jlr``, :mod:`.baselines`), which this package registers beside ``bigan``:
the paper's family of models, trained on the same pool with the same generator and conventions,
reads best as one package whose only entry point names the paper.
"""

from __future__ import annotations

import copy
import time
from functools import partial

import torch
from torch.nn import functional as F

from benchharness import hookimpl
from benchharness.accel import prepare_model
from benchharness.backbones import STAGES
from benchharness.data.loading.pretext_pool import (default_image_dirs, open_image_pool,
                                                    restore_scales_on, split_held_out)
from benchharness.data.loading.transforms import center_crop_batch, random_crop_batch
from benchharness.interfaces import Method, RunContext
from benchharness.representation import InputConvention, Representation
from benchharness.training import PretextSteps, with_value_at_init
from .baselines import pretrain_baseline
from .networks import Encoder, Generator, JointDiscriminator, sample_z, to_generator_size

DEFAULTS = {
    "data": "auto", "data_workers": 2,  # pool in memory, streamed from disk, or by size
    "steps": 900, "batch_size": 16, "lr": 2e-4, "beta1": 0.5, "beta2": 0.999,
    "z_dim": 50,
    "encoder_size": None,    # None: the backbone's input side
    "generator_size": 32,    # G's output side and D's input side; a power of two >= 8
    "gen_channels": 32,      # G's last hidden width (doubling towards the 4x4 start)
    "disc_channels": 32,     # D's first conv width (doubling down to 4x4)
    "disc_hidden": 512, "disc_dropout": 0.0,
    "store_size": None,      # None: 1.125 x encoder_size
    "crop_scale": (0.5, 1.0),
    "held_out": 0.1, "image_dirs": None, "seed": 0, "checkpoint_every": 100,
    "restore_scale": True,
    "encoder_bn": True,      # batch norm after conv2..fc7 while training, folded in at the end
}
CONVENTION = InputConvention(mode="rgb", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
LEARNED = STAGES


def _settings(ctx: RunContext, input_size: int) -> dict:
    unknown = set(ctx.config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"bigan: unknown settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **ctx.config}
    cfg["encoder_size"] = int(cfg["encoder_size"] or input_size)
    cfg["store_size"] = int(cfg["store_size"] or round(1.125 * cfg["encoder_size"]))
    g = int(cfg["generator_size"])
    if g < 8 or g & (g - 1):
        raise ValueError(f"bigan: generator_size must be a power of two >= 8, got {g}")
    if g > cfg["encoder_size"]:
        raise ValueError(f"bigan: generator_size {g} exceeds encoder_size {cfg['encoder_size']}")
    return cfg


def discriminator_loss(d: JointDiscriminator, x: torch.Tensor, z_hat: torch.Tensor,
                       x_fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D's loss: (x, E(x)) labelled real, (G(z), z) fake; E's and G's outputs are detached.
    Binary cross-entropy averaged over the two pairs."""
    bce = F.binary_cross_entropy_with_logits
    real, fake = d(x, z_hat.detach()), d(x_fake.detach(), z)
    return 0.5 * (bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake)))


def encoder_generator_loss(d: JointDiscriminator, x, z_hat, x_fake, z) -> torch.Tensor:
    """Non-saturating E/G loss: D's labels inverted ((x, E(x)) fake, (G(z), z) real)."""
    bce = F.binary_cross_entropy_with_logits
    real, fake = d(x, z_hat), d(x_fake, z)
    return 0.5 * (bce(real, torch.zeros_like(real)) + bce(fake, torch.ones_like(fake)))


def pretrain(ctx: RunContext) -> Representation:
    """Train E, G and D adversarially on the unlabelled pool; returns E's trunk (conv1..fc7)."""
    torch.manual_seed(ctx.seed)
    network = ctx.build_backbone()
    cfg = _settings(ctx, network.spec.input_size)
    dirs = cfg["image_dirs"] or default_image_dirs(ctx.data_root)
    images = open_image_pool(dirs, cfg["store_size"], cfg["data"], cfg["data_workers"], ctx.progress,
                             ctx.cache_dir, ctx.log, "bigan pool")
    train_idx, held_idx = split_held_out(len(images), cfg["held_out"], ctx.seed)
    device, zd, gsize = ctx.device, cfg["z_dim"], int(cfg["generator_size"])
    initial = copy.deepcopy(network)  # the scale the trunk's stages are given back at the end
    init_batch = _init_batch(images, train_idx, cfg, device)
    encoder = prepare_model(Encoder(network, zd, bool(cfg["encoder_bn"])), device)
    encoder.init_to_prior(init_batch)
    gen_net = prepare_model(Generator(zd, gsize, cfg["gen_channels"]), device)
    disc = prepare_model(JointDiscriminator(zd, gsize, cfg["disc_channels"], cfg["disc_hidden"],
                                            cfg["disc_dropout"]), device)
    encoder.eval(), gen_net.eval()
    # the untrained E and G on the held-out images, before any resume (the loop sets train mode)
    error_at_init = (reconstruction_error(encoder, gen_net, images[held_idx], cfg, device)
                     if len(held_idx) else None)
    betas = (cfg["beta1"], cfg["beta2"])
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg["lr"], betas=betas)
    opt_eg = torch.optim.Adam(list(encoder.parameters()) + list(gen_net.parameters()),
                              lr=cfg["lr"], betas=betas)
    rng = torch.Generator().manual_seed(ctx.seed)
    loop = PretextSteps(ctx, "bigan", cfg["steps"], cfg["checkpoint_every"],
                        {"e": encoder, "g": gen_net, "d": disc, "opt_d": opt_d, "opt_eg": opt_eg}, rng,
                        global_rng=True)  # torch's generator draws D's dropout masks
    start = time.perf_counter()
    for m in (encoder, gen_net, disc):
        m.train()
    for _ in loop:
        idx = train_idx[torch.randint(len(train_idx), (cfg["batch_size"],), generator=rng)]
        crops = random_crop_batch(images[idx], cfg["encoder_size"], rng, scale=tuple(cfg["crop_scale"]))
        x_enc = CONVENTION.normalise(crops.to(device))
        x = to_generator_size(x_enc, gsize)
        z = sample_z(len(idx), zd, rng).to(device)
        z_hat, x_fake = encoder(x_enc), gen_net(z)

        loss_d = discriminator_loss(disc, x, z_hat, x_fake, z)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        loss_eg = encoder_generator_loss(disc, x, z_hat, x_fake, z)
        opt_eg.zero_grad(set_to_none=True)
        loss_eg.backward()  # D's gradients from this pass are cleared before D's next step
        opt_eg.step()
        loop.record(D=loss_d, EG=loss_eg)
    train_seconds = time.perf_counter() - start
    encoder.eval()
    encoder.fold_batch_norm()  # the trunk alone, as plain AlexNet, is the representation
    pretext = reconstruction_pretext(encoder, gen_net, images[held_idx], cfg, ctx, init_batch)
    pretext = with_value_at_init(pretext, None if error_at_init is None else {"value": error_at_init}, ctx.log)
    scale = (restore_scales_on(network, initial, images[held_idx[:256]], CONVENTION, LEARNED, device)
             if cfg["restore_scale"] else None)
    return Representation(network.cpu(), ctx.backbone, CONVENTION, learned_stages=LEARNED, meta={
        "pretrain_data": [str(d) for d in dirs], "pretrain_images": len(train_idx),
        "train_seconds": train_seconds, "pretext": pretext, "scale_restored": scale,
        "final_losses": dict(loop.running),
        "encoder_size": cfg["encoder_size"], "generator_size": gsize, "z_dim": zd})


def _init_batch(images: torch.Tensor, train_idx: torch.Tensor, cfg: dict, device) -> torch.Tensor:
    """Encoder input for up to 256 training images (centre crops, seeded choice): the batch
    the map to z is initialised on, for the trained encoder and for the untrained baseline."""
    pick = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(1))[:256]]
    return CONVENTION.normalise(center_crop_batch(images[pick], cfg["encoder_size"]).to(device))


@torch.no_grad()
def reconstruction_error(encoder: Encoder | None, gen_net: Generator, images: torch.Tensor, cfg: dict,
                         device, z_generator: torch.Generator | None = None,
                         permutation: torch.Tensor | None = None) -> float:
    """Mean squared error between centre crops of ``images`` (at G's size, in [-1, 1]) and
    G(E(x)); with ``encoder`` None, G of prior samples drawn from ``z_generator`` instead; with
    ``permutation``, G(E(x[permutation])) against x (an encoder output of another image)."""
    total, count = 0.0, 0
    crops = center_crop_batch(images, cfg["encoder_size"])
    for s in range(0, len(images), 256):
        x_enc = CONVENTION.normalise(crops[s:s + 256].to(device))
        x = to_generator_size(x_enc, int(cfg["generator_size"]))
        if encoder is None:
            z = sample_z(len(x), cfg["z_dim"], z_generator).to(device)
        elif permutation is not None:
            z = encoder(CONVENTION.normalise(crops[permutation[s:s + 256]].to(device)))
        else:
            z = encoder(x_enc)
        total += (gen_net(z) - x).pow(2).sum().item()
        count += x.numel()
    return total / count


def reconstruction_pretext(encoder: Encoder, gen_net: Generator, held: torch.Tensor, cfg: dict,
                           ctx: RunContext, init_batch: torch.Tensor) -> dict | None:
    """The held-out reconstruction error of E and G against the same with an untrained E.

    ``chance`` is G(E0(x)) with the trained G and a freshly initialised encoder E0 of the same
    architecture (the untrained trunk and a linear map to z) whose map to z is fitted, from the
    first two moments only, so that its codes of the held-out images have the mean and
    covariance of the trained E's codes: G then receives codes from the region it was trained
    on, and the two figures differ only by what the codes say about x. (With E0's map merely at
    the prior's scale, ``chance_prior_scaled``, G gets correlated codes from another part of
    z-space, and an L2 figure swings with how bland G's images happen to be there; with a tiny
    random map, E0 hands G one constant code, the blurred average a pixel L2 favours.) Also
    stored: ``random_z`` (G of prior samples) and ``shuffled`` (the trained E's code of another
    held-out image), which an encoder that knows nothing about x would also reach.
    """
    if len(held) == 0:
        return None
    torch.manual_seed(ctx.seed + 1)
    fresh = prepare_model(Encoder(ctx.build_backbone(), cfg["z_dim"]), ctx.device).eval()  # the untrained trunk
    fresh.init_to_prior(init_batch)  # its z at the prior's scale, as the trained E's started
    for m in (encoder, gen_net, fresh):
        m.eval()
    value = reconstruction_error(encoder, gen_net, held, cfg, ctx.device)
    chance_prior_scaled = reconstruction_error(fresh, gen_net, held, cfg, ctx.device)
    random_z = reconstruction_error(None, gen_net, held, cfg, ctx.device,
                                    torch.Generator().manual_seed(12_345))
    shuffled = reconstruction_error(encoder, gen_net, held, cfg, ctx.device, permutation=torch.roll(
        torch.arange(len(held)), 1)) if len(held) > 1 else None
    chance = chance_prior_scaled
    if len(held) > 2:
        with torch.no_grad():
            x_enc = CONVENTION.normalise(center_crop_batch(held, cfg["encoder_size"]).to(ctx.device))
            codes = torch.cat([encoder(x_enc[s:s + 256]) for s in range(0, len(x_enc), 256)])
        fresh.match_codes(x_enc, codes)
        chance = reconstruction_error(fresh, gen_net, held, cfg, ctx.device)
    return {"metric": "reconstruction-l2 (lower is better)", "value": value, "chance": chance,
            "chance_prior_scaled": chance_prior_scaled, "random_z": random_z, "shuffled": shuffled,
            "held_out_images": len(held)}


@hookimpl
def benchharness_methods():
    """BiGAN on unlabelled images, and its GAN baselines (:mod:`.baselines`)."""
    return [Method("bigan", "unsup", ("images",), pretrain,
                   "bidirectional GAN: encoder trained against a joint (x, z) discriminator "
                   "(Donahue et al. 2017)"),
            Method("bigan-d", "unsup", ("images",), partial(pretrain_baseline, "bigan-d"),
                   "BiGAN's baseline: the discriminator of a standard GAN (AlexNet trunk as D's "
                   "image pathway) (Donahue et al. 2017)"),
            Method("bigan-lr", "unsup", ("images",), partial(pretrain_baseline, "bigan-lr"),
                   "BiGAN's baseline: a latent regressor E trained on L(z, E(G(z))) beside a "
                   "standard GAN (Donahue et al. 2017)"),
            Method("bigan-jlr", "unsup", ("images",), partial(pretrain_baseline, "bigan-jlr"),
                   "BiGAN's baseline: the joint latent regressor, G also minimising "
                   "L(z, E(G(z))) (Donahue et al. 2017)")]
