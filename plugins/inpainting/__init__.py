"""``inpainting``: context encoders (Pathak, Krahenbuhl, Donahue, Darrell, Efros 2016,
"Context Encoders: Feature Learning by Inpainting"), group ``self-sup``.

A quarter of each image is removed (random blocks, :mod:`benchharness_plugins.inpainting.masks`;
the paper's feature learning used random regions, shapes from VOC 2012 segmentation masks) and
filled with the pool's mean colour; the network predicts the whole image and is scored on the
removed pixels only. Network (:mod:`benchharness_plugins.inpainting.network`): the AlexNet trunk
through pool5 as encoder, the channel-wise fully connected layer and a 1x1 convolution across
channels, five up-convolutions as decoder. Loss: ``lambda_rec`` x the squared error on the masked
pixels (mean per masked pixel and channel) + ``lambda_adv`` x the non-saturating adversarial
loss of a small discriminator that tells real images from inpainted ones (the known pixels
pasted around the prediction), with the paper's lambda_rec = 0.999, lambda_adv = 0.001. (The
paper's own AlexNet feature-learning run used the reconstruction loss alone, reporting that
the adversarial loss did not converge with AlexNet: ``lambda_adv = 0`` reproduces that and
skips the discriminator.) The paper's overlap band (the context pixels around a central hole
weighted x10) belongs to its central-region masks and is not implemented: every masked pixel
weighs 1. Images are RGB scaled to [-1, 1] (tanh output); Adam with beta1 0.5.

Learned stages are conv1..conv5 (fc6 and fc7 are not part of the context encoder and stay
random); at the end they get back their output scale at initialisation
(:func:`~benchharness.data.loading.pretext_pool.restore_scales_on`). The pretext measurement is
the squared error on the masked pixels of held-out centre crops (one fixed set of masks):
``chance`` fills them with the pool's mean colour (what the encoder's input holds there),
``chance_visible_mean`` with each image's own mean visible colour, and ``value_at_init`` is the
untrained network's figure. Training state is saved every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import copy
import time

import torch
from torch.nn import functional as F

from benchharness import hookimpl
from benchharness.accel import prepare_model
from benchharness.backbones import CONV_STAGES
from benchharness.data.loading.pretext_pool import (default_image_dirs, open_image_pool,
                                                    restore_scales_on, split_held_out, subset)
from benchharness.data.loading.transforms import center_crop_batch, random_crop_batch
from benchharness.interfaces import Method, RunContext
from benchharness.representation import InputConvention, Representation
from benchharness.training import PretextSteps
from .masks import mask_input, masked_l2, random_block_masks
from .network import ContextEncoder, Discriminator

# Defaults at the synthetic world's scale; the paper's settings (AlexNet at 227 px) in comments
# and in benchmarks/voc-transfer.toml.
DEFAULTS = {
    "data": "auto", "data_workers": 2,  # pool in memory, streamed from disk, or by size
    "steps": 600, "batch_size": 32,
    "lr": 1e-3,                # paper: 1e-4 for random-region masks (1e-3 for the central one)
    "beta1": 0.5,              # Adam, as the paper's DCGAN-based code
    "lambda_rec": 0.999, "lambda_adv": 0.001,  # paper; its AlexNet feature learning: adv 0
    "coverage": 0.25,          # share of the image removed (paper: about 1/4)
    "block": (0.125, 0.375),   # block sides, fractions of the input side
    "decoder_width": 8,        # decoder widths 8w, 4w, 2w, w (paper: DCGAN's, 512 down to 64)
    "disc_width": 8,           # the discriminator's first conv width, doubling
    "dropout": 0.0,            # after the channel-wise fc (the paper's code: 0.5)
    "store_size": None,        # None: 1.125 x the backbone's input side
    "crop_scale": (0.5, 1.0),
    "held_out": 0.1, "image_dirs": None, "seed": 0,
    "checkpoint_every": 100, "restore_scale": True,
}
CONVENTION = InputConvention(mode="rgb", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
LEARNED = CONV_STAGES
EVAL_MASK_SEED = 12_345


def _settings(ctx: RunContext, input_size: int) -> dict:
    unknown = set(ctx.config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"inpainting: unknown settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **ctx.config}
    cfg["store_size"] = int(cfg["store_size"] or round(1.125 * input_size))
    for key in ("steps", "batch_size", "checkpoint_every", "decoder_width", "disc_width"):
        if int(cfg[key]) < 1:
            raise ValueError(f"inpainting: {key} must be at least 1, not {cfg[key]!r}")
    for key in ("lambda_rec", "lambda_adv"):
        if float(cfg[key]) < 0:
            raise ValueError(f"inpainting: {key} must not be negative, not {cfg[key]!r}")
    if float(cfg["lambda_rec"]) == 0:
        raise ValueError("inpainting: lambda_rec must be positive (the reconstruction is the pretext)")
    return cfg


def mean_colour(images, idx: torch.Tensor, size: int) -> torch.Tensor:
    """The mean of each channel over centre crops of (up to 512 of) ``images[idx]``, in the
    network's [-1, 1] scale: the value the masked pixels are filled with."""
    crops = center_crop_batch(subset(images, idx[:512])[:], size)
    return CONVENTION.normalise(crops).mean((0, 2, 3))


def pretrain(ctx: RunContext) -> Representation:
    """Train the context encoder on the unlabelled pool; returns conv1..conv5 as learned."""
    torch.manual_seed(ctx.seed)
    network = ctx.build_backbone()
    size = network.spec.input_size
    cfg = _settings(ctx, size)
    initial = copy.deepcopy(network)  # the scale the learned stages are given back at the end
    dirs = cfg["image_dirs"] or default_image_dirs(ctx.data_root)
    images = open_image_pool(dirs, cfg["store_size"], cfg["data"], cfg["data_workers"], ctx.progress,
                             ctx.cache_dir, ctx.log, "inpainting pool")
    train_idx, held_idx = split_held_out(len(images), cfg["held_out"], ctx.seed)
    fill = mean_colour(images, train_idx, size).to(ctx.device)
    model = prepare_model(ContextEncoder(network, size, cfg["decoder_width"], cfg["dropout"]), ctx.device)
    adversarial = float(cfg["lambda_adv"]) > 0
    disc = prepare_model(Discriminator(size, cfg["disc_width"]), ctx.device) if adversarial else None
    untrained = copy.deepcopy(model)  # for value_at_init, on the same held-out masks
    betas = (cfg["beta1"], 0.999)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg["lr"], betas=betas) if adversarial else None
    gen = torch.Generator().manual_seed(ctx.seed)
    state = {"model": model, "opt": opt, **({"disc": disc, "opt_d": opt_d} if adversarial else {})}
    loop = PretextSteps(ctx, "inpainting", cfg["steps"], cfg["checkpoint_every"], state, gen)
    start = time.perf_counter()
    model.train()
    for _ in loop:
        idx = train_idx[torch.randint(len(train_idx), (cfg["batch_size"],), generator=gen)]
        crops = random_crop_batch(images[idx], size, gen, scale=tuple(cfg["crop_scale"]))
        x = CONVENTION.normalise(crops.to(ctx.device))
        masks = random_block_masks(len(x), size, gen, cfg["coverage"], tuple(cfg["block"])).to(ctx.device)
        prediction = model(mask_input(x, masks, fill))
        loss = float(cfg["lambda_rec"]) * masked_l2(prediction, x, masks)
        if adversarial:
            completed = x * (1 - masks) + prediction * masks
            loss_d = discriminator_loss(disc, x, completed.detach())
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            real = torch.ones(len(x), device=ctx.device)
            loss = loss + float(cfg["lambda_adv"]) * F.binary_cross_entropy_with_logits(disc(completed), real)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loop.record(loss)
    train_seconds = time.perf_counter() - start
    pretext = held_out_inpainting(model, untrained, subset(images, held_idx)[:], fill, cfg, size)
    scale = (restore_scales_on(network, initial, subset(images, held_idx[:256])[:], CONVENTION, LEARNED,
                               ctx.device) if cfg["restore_scale"] else None)
    return Representation(network.cpu(), ctx.backbone, CONVENTION, learned_stages=LEARNED, meta={
        "pretrain_data": [str(d) for d in dirs], "pretrain_images": len(train_idx),
        "train_seconds": train_seconds, "pretext": pretext, "final_loss": loop.running.get("loss"),
        "scale_restored": scale, "adversarial": adversarial, "mask": "random blocks",
        "mask_coverage": cfg["coverage"]})


def discriminator_loss(disc: Discriminator, real: torch.Tensor, completed: torch.Tensor) -> torch.Tensor:
    """The discriminator's binary cross-entropy: real images 1, inpainted ones 0 (averaged)."""
    bce = F.binary_cross_entropy_with_logits
    r, f = disc(real), disc(completed)
    return 0.5 * (bce(r, torch.ones_like(r)) + bce(f, torch.zeros_like(f)))


@torch.no_grad()
def held_out_inpainting(model: ContextEncoder, untrained: ContextEncoder, images: torch.Tensor,
                        fill: torch.Tensor, cfg: dict, size: int) -> dict | None:
    """Squared error on the masked pixels of held-out centre crops ([-1, 1] scale, mean per
    masked pixel and channel; lower is better) for the trained and the untrained network and two
    fills that know nothing of the missing content: the pool's mean colour (``chance``) and each
    image's mean visible colour (``chance_visible_mean``). The masks are drawn once from a fixed
    seed, so every figure is on the same pixels."""
    if len(images) == 0:
        return None
    device = fill.device
    x = CONVENTION.normalise(center_crop_batch(images, size)).to(device)
    masks = random_block_masks(len(x), size, torch.Generator().manual_seed(EVAL_MASK_SEED),
                               cfg["coverage"], tuple(cfg["block"])).to(device)
    inputs = mask_input(x, masks, fill)
    figures = {}
    for name, net in (("value", model), ("value_at_init", untrained)):
        net.eval()
        prediction = torch.cat([net(inputs[s:s + 256]) for s in range(0, len(x), 256)])
        figures[name] = masked_l2(prediction, x, masks).item()
    visible = (x * (1 - masks)).sum((2, 3)) / (1 - masks).sum((2, 3)).clamp_min(1)
    return {"metric": "masked-l2 (lower is better)", **figures,
            "chance": masked_l2(fill.view(1, -1, 1, 1).expand_as(x), x, masks).item(),
            "chance_visible_mean": masked_l2(visible[:, :, None, None].expand_as(x), x, masks).item(),
            "held_out_images": len(x), "masked_share": masks.mean().item()}


@hookimpl
def benchharness_methods():
    """Context encoders: inpainting removed image regions."""
    return [Method("inpainting", "self-sup", ("images",), pretrain,
                   "context encoder: masked regions inpainted from their context, l2 + adversarial "
                   "(Pathak et al. 2016)")]
