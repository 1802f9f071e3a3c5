"""The GAN baselines of BiGAN (Donahue, Krahenbuhl, Darrell 2017, section 4; Donahue's thesis
Table 5.3), group ``unsup``: a standard GAN on unlabelled images, whose discriminator D(x) has
the AlexNet trunk (through fc7) as its image pathway and the DCGAN generator G of
:mod:`.networks`, trained with the non-saturating loss, Adam (lr 2e-4, beta1 0.5), D and G
updated in alternation as in ``bigan``. Three representations come from it:

- ``bigan-d``: D's trunk, the features of a GAN discriminator ("Discriminator (D)");
- ``bigan-lr``: a latent regressor E (the trunk and a linear map to ``z``, as BiGAN's encoder)
  trained on L(z, E(G(z))) with the sigmoid cross-entropy the paper names for the uniform prior
  (target (z + 1) / 2, E's outputs as logits, averaged over the dimensions). As in the authors'
  code (jeffdonahue/bigan, the "LR" objective: ``--encode_weight 1 --encode_gen_weight 0``) E
  trains alongside the GAN, one E step per G step on the same z, and none of its loss reaches G:
  G's training is the plain GAN's, so E regresses the generator of each moment rather than only
  the final one (the paper's "after or jointly during" a regular GAN training). E never sees a
  real image: the paper's point about this baseline;
- ``bigan-jlr``: the joint latent regressor: the same, with G also minimising the regression
  loss at weight ``encode_gen_weight`` = 0.25 (the authors' "Joint LR" objective), so G is pushed
  towards samples whose z can be read back.

Pretext figures, all on held-out data with the final networks in eval mode:

- ``bigan-d``: D's balanced accuracy (the mean of its accuracies on real and generated images,
  threshold at logit 0) on the held-out images' centre crops against as many samples of the
  final G from fixed held-out z; chance 0.5; ``value_at_init`` the same with D as it was
  initialised (the same data: the final G's samples);
- ``bigan-lr`` / ``bigan-jlr``: L(z, E(G(z))) on fixed held-out z through the final G, lower is
  better; chance log 2, the loss of predicting the prior's mean (E's logits 0, which is also the
  best constant prediction of a uniform target); ``value_at_init`` the same with E as it was
  initialised. Also stored: ``real_code_std``, how spread E's codes of held-out real images are
  (an E that never saw real images may map them all to one code).

At the end the representation's batch norms are folded into its layers (the trunk is a plain
AlexNet computing what the network computed in eval mode) and its stages get back the output
scale they had at initialisation. Training state is saved every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch.nn import functional as F

from benchharness.accel import prepare_model
from benchharness.backbones import STAGES
from benchharness.data.loading.pretext_pool import (default_image_dirs, open_image_pool,
                                                    restore_scales_on, split_held_out)
from benchharness.data.loading.transforms import center_crop_batch, random_crop_batch
from benchharness.interfaces import RunContext
from benchharness.representation import InputConvention, Representation
from benchharness.training import PretextSteps
from .networks import Encoder, Generator, TrunkDiscriminator, sample_z, to_generator_size

# Defaults at the synthetic world's scale; the paper's ImageNet settings in comments.
DEFAULTS = {
    "data": "auto", "data_workers": 2,  # pool in memory, streamed from disk, or by size
    "steps": 450,            # paper: 100 epochs of ImageNet at batch 128, then 100 decaying
    "batch_size": 16,        # paper: 128
    "lr": 2e-4, "beta1": 0.5, "beta2": 0.999,  # paper: Adam 2e-4, beta1 0.5
    "z_dim": 50,             # paper: 200 (uniform in [-1, 1])
    "generator_size": None,  # None: the trunk's input side (paper: G's 64 px, D's and E's 64)
    "gen_channels": 32,      # G's last hidden width (doubling towards the 4x4 start)
    "store_size": None,      # None: 1.125 x the trunk's input side
    "crop_scale": (0.5, 1.0),
    "batch_norm": True,      # D's / E's batch norm after conv2..fc7, folded in at the end
    "encode_gen_weight": None,  # G's weight on the regression loss; None: 0 (LR), 0.25 (JLR)
    "held_out": 0.1, "held_out_z": 512, "image_dirs": None, "seed": 0, "checkpoint_every": 100,
    "restore_scale": True,
}
CONVENTION = InputConvention(mode="rgb", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
LEARNED = STAGES
KINDS = {"bigan-d": "discriminator", "bigan-lr": "latent regressor", "bigan-jlr": "joint latent regressor"}
ENCODE_GEN_WEIGHT = {"bigan-lr": 0.0, "bigan-jlr": 0.25}  # jeffdonahue/bigan's LR / Joint LR objectives


def _settings(name: str, ctx: RunContext, input_size: int) -> dict:
    unknown = set(ctx.config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"{name}: unknown settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **ctx.config}
    cfg["generator_size"] = int(cfg["generator_size"] or input_size)
    cfg["store_size"] = int(cfg["store_size"] or round(1.125 * input_size))
    g = cfg["generator_size"]
    if g < 8 or g & (g - 1) or g > input_size:
        raise ValueError(f"{name}: generator_size must be a power of two from 8 to the trunk's input "
                         f"side {input_size}, got {g}")
    for key in ("steps", "batch_size", "checkpoint_every", "held_out_z"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{name}: {key} must be at least 1, not {cfg[key]!r}")
    if name == "bigan-d":
        if cfg["encode_gen_weight"] is not None:
            raise ValueError("bigan-d: encode_gen_weight is a setting of the latent regressors "
                             "(bigan-lr, bigan-jlr); bigan-d trains no regressor")
    else:
        cfg["encode_gen_weight"] = float(ENCODE_GEN_WEIGHT[name] if cfg["encode_gen_weight"] is None
                                         else cfg["encode_gen_weight"])
        if cfg["encode_gen_weight"] < 0:
            raise ValueError(f"{name}: encode_gen_weight must be >= 0, not {cfg['encode_gen_weight']}")
    return cfg


def to_trunk_input(x: torch.Tensor, generator_size: int, input_size: int) -> torch.Tensor:
    """Images at G's resolution shown to a trunk of ``input_size`` (upsampled when G is smaller;
    real crops go down to G's resolution first, so D cannot tell them apart by sharpness)."""
    x = to_generator_size(x, generator_size)
    if x.shape[-1] == input_size:
        return x
    return F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)


def gan_discriminator_loss(d, x_real: torch.Tensor, x_fake: torch.Tensor) -> torch.Tensor:
    """D's loss: real images labelled 1, G's (detached) labelled 0; binary cross-entropy averaged
    over the two halves. Both go through D as one batch, so its batch norm sees the mixture the
    folded statistics will describe."""
    logits = d(torch.cat([x_real, x_fake.detach()]))
    real, fake = logits[:len(x_real)], logits[len(x_real):]
    bce = F.binary_cross_entropy_with_logits
    return 0.5 * (bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake)))


def gan_generator_loss(d, x_real: torch.Tensor, x_fake: torch.Tensor) -> torch.Tensor:
    """G's non-saturating loss, -log D(G(z)), with G's images in the same mixed batch as D's step."""
    fake = d(torch.cat([x_real, x_fake]))[len(x_real):]
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def latent_regression_loss(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """L(z, E(G(z))): sigmoid cross-entropy of E's logits against (z + 1) / 2, the uniform prior
    on [-1, 1] mapped onto [0, 1], averaged over samples and dimensions."""
    return F.binary_cross_entropy_with_logits(logits, (z + 1) / 2)


def regressor_loss(encoder: Encoder, x_generated: torch.Tensor, z: torch.Tensor,
                   through_generator: bool) -> torch.Tensor:
    """E's regression loss on generated images ``x_generated`` = G(z) (at the trunk's input),
    whose target is the ``z`` that made them; with ``through_generator`` False, the images are
    detached (no gradient reaches G)."""
    x = x_generated if through_generator else x_generated.detach()
    return latent_regression_loss(encoder(x), z)


def pretrain_baseline(name: str, ctx: RunContext) -> Representation:
    """Train the GAN (and, for ``bigan-lr`` / ``bigan-jlr``, the latent regressor E) on the
    unlabelled pool; return D's trunk (``bigan-d``) or E's (the regressors)."""
    torch.manual_seed(ctx.seed)
    d_trunk = ctx.build_backbone()
    size = d_trunk.spec.input_size
    cfg = _settings(name, ctx, size)
    regress = name != "bigan-d"
    e_trunk = ctx.build_backbone() if regress else None
    network = e_trunk if regress else d_trunk  # the representation's trunk
    dirs = cfg["image_dirs"] or default_image_dirs(ctx.data_root)
    images = open_image_pool(dirs, cfg["store_size"], cfg["data"], cfg["data_workers"], ctx.progress,
                             ctx.cache_dir, ctx.log, f"{name} pool")
    train_idx, held_idx = split_held_out(len(images), cfg["held_out"], ctx.seed)
    device, zd, gsize = ctx.device, cfg["z_dim"], cfg["generator_size"]
    initial_trunk = copy.deepcopy(network)  # the scale the stages are given back at the end
    bn = bool(cfg["batch_norm"])
    disc = prepare_model(TrunkDiscriminator(d_trunk, bn), device)
    gen_net = prepare_model(Generator(zd, gsize, cfg["gen_channels"]), device)
    encoder = prepare_model(Encoder(e_trunk, zd, bn), device) if regress else None
    initial = copy.deepcopy(encoder if regress else disc)  # for value_at_init
    betas = (cfg["beta1"], cfg["beta2"])
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg["lr"], betas=betas)
    g_params = list(gen_net.parameters()) + (list(encoder.parameters()) if regress else [])
    opt_g = torch.optim.Adam(g_params, lr=cfg["lr"], betas=betas)  # E's and G's parameters are disjoint
    modules = {"d": disc, "g": gen_net, "opt_d": opt_d, "opt_g": opt_g, **({"e": encoder} if regress else {})}
    rng = torch.Generator().manual_seed(ctx.seed)
    loop = PretextSteps(ctx, name, cfg["steps"], cfg["checkpoint_every"], modules, rng)
    start = time.perf_counter()
    for m in (disc, gen_net, encoder):
        if m is not None:
            m.train()
    for _ in loop:
        idx = train_idx[torch.randint(len(train_idx), (cfg["batch_size"],), generator=rng)]
        crops = random_crop_batch(images[idx], size, rng, scale=tuple(cfg["crop_scale"]))
        x = to_trunk_input(CONVENTION.normalise(crops.to(device)), gsize, size)
        z = sample_z(len(idx), zd, rng).to(device)
        x_fake = to_trunk_input(gen_net(z), gsize, size)

        loss_d = gan_discriminator_loss(disc, x, x_fake)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        loss_g = gan_generator_loss(disc, x, x_fake)
        losses = {"D": loss_d, "G": loss_g.detach()}
        if regress:
            weight = cfg["encode_gen_weight"]
            loss_e = regressor_loss(encoder, x_fake, z, through_generator=weight > 0)
            # LR: E's own loss, G untouched; JLR: G and E minimise G's loss + weight x L (as the
            # authors' code; Adam makes E's step nearly independent of the weight's scale)
            loss_g = loss_g + (weight * loss_e if weight > 0 else loss_e)
            losses["E"] = loss_e.detach()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()  # D's gradients from this pass are cleared before D's next step
        opt_g.step()
        loop.record(**losses)
    train_seconds = time.perf_counter() - start
    for m in (disc, gen_net, encoder, initial):
        if m is not None:
            m.eval()
    held = images[held_idx]
    if regress:
        pretext = regression_pretext(encoder, initial, gen_net, held, cfg, ctx)
    else:
        pretext = discriminator_pretext(disc, initial, gen_net, held, cfg, ctx)
    (encoder if regress else disc).fold_batch_norm()  # the trunk alone, as plain AlexNet
    scale = (restore_scales_on(network, initial_trunk, images[held_idx[:256]], CONVENTION, LEARNED, device)
             if cfg["restore_scale"] else None)
    return Representation(network.cpu(), ctx.backbone, CONVENTION, learned_stages=LEARNED, meta={
        "pretrain_data": [str(d) for d in dirs], "pretrain_images": len(train_idx),
        "train_seconds": train_seconds, "pretext": pretext, "scale_restored": scale,
        "final_losses": dict(loop.running), "generator_size": gsize, "z_dim": zd,
        "transferred": "discriminator" if not regress else "latent regressor",
        **({"encode_gen_weight": cfg["encode_gen_weight"]} if regress else {})})


def _held_out_z(cfg: dict, seed: int) -> torch.Tensor:
    """Fixed prior samples no training step drew (their own generator)."""
    return sample_z(int(cfg["held_out_z"]), cfg["z_dim"], torch.Generator().manual_seed(10_007 + seed))


@torch.no_grad()
def _real_batches(held: torch.Tensor, cfg: dict, size: int, device):
    crops = center_crop_batch(held, size)
    for s in range(0, len(crops), 256):
        yield to_trunk_input(CONVENTION.normalise(crops[s:s + 256].to(device)), cfg["generator_size"], size)


@torch.no_grad()
def _fake_batches(gen_net: Generator, z: torch.Tensor, cfg: dict, size: int, device):
    for s in range(0, len(z), 256):
        yield z[s:s + 256].to(device), to_trunk_input(gen_net(z[s:s + 256].to(device)),
                                                      cfg["generator_size"], size)


@torch.no_grad()
def discriminator_accuracy(disc, gen_net: Generator, held: torch.Tensor, cfg: dict, size: int,
                           device, seed: int) -> dict:
    """D's accuracy on held-out real centre crops (logit > 0) and on as many G samples of held-out
    z (logit < 0), and their mean (balanced accuracy)."""
    real = torch.cat([disc(x) > 0 for x in _real_batches(held, cfg, size, device)]).float().mean().item()
    z = _held_out_z({**cfg, "held_out_z": len(held)}, seed)
    fake = torch.cat([disc(x) < 0 for _, x in _fake_batches(gen_net, z, cfg, size, device)]).float().mean().item()
    return {"value": 0.5 * (real + fake), "real": real, "fake": fake}


def discriminator_pretext(disc, initial, gen_net: Generator, held: torch.Tensor, cfg: dict,
                          ctx: RunContext) -> dict | None:
    """``bigan-d``'s held-out figure: D's balanced real/generated accuracy, chance 0.5, and the
    same for D as initialised (``value_at_init``)."""
    if len(held) == 0:
        return None
    size = disc.trunk.spec.input_size
    trained = discriminator_accuracy(disc, gen_net, held, cfg, size, ctx.device, ctx.seed)
    at_init = discriminator_accuracy(initial, gen_net, held, cfg, size, ctx.device, ctx.seed)
    return {"metric": "real-vs-generated balanced accuracy", "value": trained["value"], "chance": 0.5,
            "value_at_init": at_init["value"], "real_accuracy": trained["real"],
            "generated_accuracy": trained["fake"], "held_out_images": len(held)}


@torch.no_grad()
def regression_loss_on(encoder: Encoder | None, gen_net: Generator, z: torch.Tensor, cfg: dict,
                       size: int, device) -> float:
    """Mean L(z, E(G(z))) over ``z``; with ``encoder`` None, the prior-mean prediction (logits 0)."""
    total = 0.0
    for zb, x in _fake_batches(gen_net, z, cfg, size, device):
        logits = torch.zeros_like(zb) if encoder is None else encoder(x)
        total += latent_regression_loss(logits, zb).item() * len(zb)
    return total / len(z)


def regression_pretext(encoder: Encoder, initial: Encoder, gen_net: Generator, held: torch.Tensor,
                       cfg: dict, ctx: RunContext) -> dict:
    """The regressors' held-out figure: L(z, E(G(z))) on held-out z, against the prior mean's
    (chance, log 2) and E as initialised (``value_at_init``)."""
    size = encoder.trunk.spec.input_size
    z = _held_out_z(cfg, ctx.seed)
    pretext = {"metric": "latent-regression sigmoid cross-entropy (lower is better)",
               "value": regression_loss_on(encoder, gen_net, z, cfg, size, ctx.device),
               "chance": regression_loss_on(None, gen_net, z, cfg, size, ctx.device),
               "value_at_init": regression_loss_on(initial, gen_net, z, cfg, size, ctx.device),
               "held_out_z": len(z)}
    if len(held) > 1:
        with torch.no_grad():
            codes = torch.cat([torch.tanh(encoder(x) / 2) for x in _real_batches(held, cfg, size, ctx.device)])
        pretext["real_code_std"] = codes.std(0).mean().item()  # 2 sigmoid - 1: E's code in [-1, 1]
        pretext["prior_std"] = 1 / math.sqrt(3)
    return pretext
