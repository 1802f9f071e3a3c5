"""``autoencoder``: the autoencoder baseline of BiGAN (Donahue, Krahenbuhl, Darrell 2017,
"Adversarial Feature Learning", Table 3; Table 5.3's "Autoencoder (l2)" row of Donahue's
thesis), group ``unsup``.

The encoder is BiGAN's E: the AlexNet trunk through fc7 followed by a linear map to a code
``z``, so conv1..fc7 are all learned. The decoder (:mod:`.network`) is shaped like BiGAN's
generator G: the core's DCGAN generator (:mod:`benchharness.dcgan`, which G uses too) from ``z``
to an image (tanh). The loss is the pixel
reconstruction error between the decoder's output and the encoder's input resized to the
decoder's side: mean squared error (``loss = "l2"``, the table's row) or mean absolute error
(``"l1"``). Images are RGB scaled to [-1, 1] (mean 0.5, std 0.5); Adam with beta1 0.5 as in
BiGAN's code. Differs from the paper: E has no batch normalisation (BiGAN's AlexNet E has it
after every layer but the first); the trunk is rescaled at the end instead
(:func:`~benchharness.data.loading.pretext_pool.restore_scales_on`, one positive factor per
stage, back to its output scale at initialisation).

The pretext measurement is the same reconstruction error on held-out centre crops (lower is
better): ``value`` for the trained network, ``value_at_init`` for the untrained one (same
weights as at step 0) on the same crops, ``chance`` for predicting the training crops' mean image
(what a decoder that ignores its code would learn). Training state is saved every
``checkpoint_every`` steps and a killed pretraining resumes there.
"""

from __future__ import annotations

import copy
import time

import torch

from benchharness import hookimpl
from benchharness.accel import prepare_model
from benchharness.backbones import STAGES
from benchharness.data.loading.pretext_pool import (default_image_dirs, open_image_pool,
                                                    restore_scales_on, split_held_out, subset)
from benchharness.data.loading.transforms import center_crop_batch, random_crop_batch
from benchharness.interfaces import Method, RunContext
from benchharness.representation import InputConvention, Representation
from benchharness.training import PretextSteps
from .network import LOSSES, Autoencoder, reconstruction_loss, to_decoder_size

# Defaults at the synthetic world's scale; the paper's settings (BiGAN's, AlexNet E at 112 px)
# in comments and in benchmarks/voc-transfer.toml.
DEFAULTS = {
    "data": "auto", "data_workers": 2,  # pool in memory, streamed from disk, or by size
    "steps": 450, "batch_size": 16,     # paper: batch 128, ~100 ImageNet epochs
    "lr": 2e-4, "beta1": 0.5, "beta2": 0.999,  # paper (BiGAN's Adam)
    "loss": "l2",              # "l1": mean absolute error
    "z_dim": 50,               # paper: 200
    "decoder_size": None,      # None: the largest power of two within the backbone's input side
                               # (64 for alexnet-small; paper: G at 64 px, E at 112)
    "decoder_channels": 16,    # the decoder's last hidden width, doubling towards 4x4 (paper: DCGAN's 64)
    "store_size": None,        # None: 1.125 x the backbone's input side
    "crop_scale": (0.5, 1.0),
    "held_out": 0.1, "image_dirs": None, "seed": 0,
    "checkpoint_every": 100, "restore_scale": True,
}
CONVENTION = InputConvention(mode="rgb", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
LEARNED = STAGES


def _settings(ctx: RunContext, input_size: int) -> dict:
    unknown = set(ctx.config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"autoencoder: unknown settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **ctx.config}
    if cfg["loss"] not in LOSSES:
        raise ValueError(f"autoencoder: loss must be one of {LOSSES}, not {cfg['loss']!r}")
    for key in ("steps", "batch_size", "checkpoint_every", "z_dim", "decoder_channels"):
        if int(cfg[key]) < 1:
            raise ValueError(f"autoencoder: {key} must be at least 1, not {cfg[key]!r}")
    cfg["decoder_size"] = int(cfg["decoder_size"] or 2 ** (input_size.bit_length() - 1))
    if cfg["decoder_size"] > input_size:
        raise ValueError(f"autoencoder: decoder_size {cfg['decoder_size']} exceeds the backbone's "
                         f"input side {input_size}")
    cfg["store_size"] = int(cfg["store_size"] or round(1.125 * input_size))
    return cfg


def pretrain(ctx: RunContext) -> Representation:
    """Train the encoder and decoder to reconstruct unlabelled images; returns the encoder's
    trunk (conv1..fc7) as learned."""
    torch.manual_seed(ctx.seed)
    network = ctx.build_backbone()
    size = network.spec.input_size
    cfg = _settings(ctx, size)
    initial = copy.deepcopy(network)  # the scale the learned stages are given back at the end
    dirs = cfg["image_dirs"] or default_image_dirs(ctx.data_root)
    images = open_image_pool(dirs, cfg["store_size"], cfg["data"], cfg["data_workers"], ctx.progress,
                             ctx.cache_dir, ctx.log, "autoencoder pool")
    train_idx, held_idx = split_held_out(len(images), cfg["held_out"], ctx.seed)
    dsize = cfg["decoder_size"]
    model = prepare_model(Autoencoder(network, int(cfg["z_dim"]), dsize, int(cfg["decoder_channels"])),
                          ctx.device)
    untrained = copy.deepcopy(model)  # for value_at_init, on the same held-out crops
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]))
    gen = torch.Generator().manual_seed(ctx.seed)
    loop = PretextSteps(ctx, "autoencoder", cfg["steps"], cfg["checkpoint_every"],
                        {"model": model, "opt": opt}, gen)
    start = time.perf_counter()
    model.train()
    for _ in loop:
        idx = train_idx[torch.randint(len(train_idx), (cfg["batch_size"],), generator=gen)]
        crops = random_crop_batch(images[idx], size, gen, scale=tuple(cfg["crop_scale"]))
        x = CONVENTION.normalise(crops.to(ctx.device))
        loss = reconstruction_loss(model(x), to_decoder_size(x, dsize), cfg["loss"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loop.record(loss)
    train_seconds = time.perf_counter() - start
    mean_image = training_mean_image(images, train_idx, size, dsize).to(ctx.device)
    pretext = held_out_reconstruction(model, untrained, subset(images, held_idx)[:], mean_image, cfg, size)
    scale = (restore_scales_on(network, initial, subset(images, held_idx[:256])[:], CONVENTION, LEARNED,
                               ctx.device) if cfg["restore_scale"] else None)
    return Representation(network.cpu(), ctx.backbone, CONVENTION, learned_stages=LEARNED, meta={
        "pretrain_data": [str(d) for d in dirs], "pretrain_images": len(train_idx),
        "train_seconds": train_seconds, "pretext": pretext, "final_loss": loop.running.get("loss"),
        "scale_restored": scale, "loss": cfg["loss"], "z_dim": int(cfg["z_dim"]),
        "decoder_size": dsize})


@torch.no_grad()
def training_mean_image(images, train_idx: torch.Tensor, size: int, decoder_size: int) -> torch.Tensor:
    """The mean of centre crops of (up to 512 of) the training images, at the decoder's side in
    the [-1, 1] scale [3, s, s]: the ``chance`` prediction, the same for every image."""
    crops = center_crop_batch(subset(images, train_idx[:512])[:], size)
    return to_decoder_size(CONVENTION.normalise(crops), decoder_size).mean(0)


@torch.no_grad()
def held_out_reconstruction(model: Autoencoder, untrained: Autoencoder, images: torch.Tensor,
                            mean_image: torch.Tensor, cfg: dict, size: int) -> dict | None:
    """The training loss on held-out centre crops (lower is better) for the trained network
    (``value``), the untrained one (``value_at_init``) and the training mean image (``chance``)."""
    if len(images) == 0:
        return None
    device = mean_image.device
    x = CONVENTION.normalise(center_crop_batch(images, size)).to(device)
    target = to_decoder_size(x, cfg["decoder_size"])
    figures = {}
    for name, net in (("value", model), ("value_at_init", untrained)):
        net.eval()
        prediction = torch.cat([net(x[s:s + 256]) for s in range(0, len(x), 256)])
        figures[name] = reconstruction_loss(prediction, target, cfg["loss"]).item()
    chance = reconstruction_loss(mean_image.expand_as(target), target, cfg["loss"]).item()
    return {"metric": f"reconstruction-{cfg['loss']} (lower is better)", **figures, "chance": chance,
            "held_out_images": len(x)}


@hookimpl
def benchharness_methods():
    """The autoencoder: BiGAN's encoder trained to reconstruct its input through a decoder."""
    return [Method("autoencoder", "unsup", ("images",), pretrain,
                   "autoencoder: BiGAN's encoder (trunk through fc7, linear map to z) and a "
                   "deconvolutional decoder, l2 (or l1) reconstruction (Donahue et al. 2017's baseline)")]
