"""``colorization``: colorful image colorization (Zhang, Isola, Efros 2016), group ``self-sup``.

The trunk sees only the L channel of CIE Lab (one input channel) and predicts, at every position
of its conv5 feature map (before conv5's pooling), a distribution over the Q in-gamut ab bins of
grid size 10 (:mod:`benchharness_plugins.colorization.lab`). Targets are the image's ab values averaged down to
that map and soft-encoded (Gaussian, sigma 5, over the 5 nearest bins); the multinomial
cross-entropy is reweighted per pixel by class rebalancing (lambda 0.5) against the
Gaussian-smoothed empirical bin prior of the training pool.

The Representation takes ``lab-l`` input normalised as (L - 50) / 50; learned stages are
conv1..conv5 (fc6 and fc7 stay random). At the end the learned stages get back the output scale
they had at initialisation (:func:`~benchharness.data.loading.pretext_pool.restore_scales_on`: one
positive factor per stage, the network's function unchanged up to scale), so that a linear
classifier reads them at the scale the tasks' learning rates expect. The pretext measurement is
the ab-bin accuracy (argmax bin against the pixel's true bin) on held-out images; chance is the
share of the most common bin there; ``value_at_init`` (and ``value_coloured_at_init``,
``top5_at_init``) the untrained network's. Training state is saved every ``checkpoint_every`` steps,
so a killed pretraining resumes.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.nn import functional as F

from benchharness import hookimpl
from benchharness.accel import prepare_model
from benchharness.backbones import CONV_STAGES
from benchharness.data.loading.pretext_pool import (default_image_dirs, open_image_pool,
                                                    restore_scales_on, split_held_out, subset)
from benchharness.data.loading.transforms import center_crop_batch, random_crop_batch
from benchharness.interfaces import Method, RunContext
from benchharness.representation import InputConvention, Representation
from benchharness.training import PretextSteps, with_value_at_init
from .lab import ABQuantizer, rgb_to_lab

DEFAULTS = {
    "data": "auto", "data_workers": 2,  # pool in memory, streamed from disk, or by size
    "steps": 450, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.0,  # Adam, as the paper
    "store_size": None,        # None: 1.125 x the backbone's input side
    "crop_scale": (0.35, 1.0),
    "neighbours": 5, "sigma": 5.0,   # soft encoding
    "lam": 0.5, "prior_sigma": 5.0,  # class rebalancing
    "held_out": 0.1, "image_dirs": None, "seed": 0,
    "checkpoint_every": 100, "restore_scale": True,
}
CONVENTION = InputConvention(mode="lab-l", mean=(50.0,), std=(50.0,))
LEARNED = CONV_STAGES


def _settings(ctx: RunContext, input_size: int) -> dict:
    unknown = set(ctx.config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"colorization: unknown settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **ctx.config}
    cfg["store_size"] = cfg["store_size"] or round(1.125 * input_size)
    for key in ("steps", "batch_size", "checkpoint_every", "neighbours"):
        if int(cfg[key]) < 1:
            raise ValueError(f"colorization: {key} must be at least 1, not {cfg[key]!r}")
    if not 0 <= cfg["lam"] <= 1:
        raise ValueError(f"colorization: lam must be in [0, 1], not {cfg['lam']!r}")
    return cfg


class ColorizationNet(nn.Module):
    """The trunk through conv5 (before its pooling) and a 1x1-conv head giving Q logits per position."""

    def __init__(self, trunk: nn.Module, q: int, hidden: int = 128):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential(nn.Conv2d(trunk.conv5_channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, q, 1))

    def forward(self, l_input: torch.Tensor) -> torch.Tensor:
        h = self.trunk.forward_to(l_input, "conv4")
        h = self.trunk.conv5[:-1](h)  # conv + relu; the pool would leave too coarse a map
        return self.head(h)


def lab_batch(rgb: torch.Tensor, out_hw: tuple[int, int]):
    """Network input (normalised L) and ab averaged down to ``out_hw`` from RGB in [0, 1].

    L is taken from the one Lab conversion (the same operations as ``CONVENTION.normalise``,
    so the same values) rather than converted a second time."""
    lab = rgb_to_lab(rgb)
    mean, std = CONVENTION.mean[0], CONVENTION.std[0]
    return (lab[:, :1] - mean) / std, F.adaptive_avg_pool2d(lab[:, 1:], out_hw)


def bin_prior(images: torch.Tensor, quantizer: ABQuantizer, size: int, out_hw, device) -> torch.Tensor:
    """Empirical frequency of each ab bin [Q] over ``images`` (centre crops at the target grid)."""
    counts = torch.zeros(quantizer.q, dtype=torch.float64)
    for s in range(0, len(images), 256):
        _, ab = lab_batch(center_crop_batch(images[s:s + 256].to(device), size), out_hw)
        counts += torch.bincount(quantizer.encode(ab).flatten().cpu(), minlength=quantizer.q)
    return (counts / counts.sum()).float()


def rebalanced_loss(logits: torch.Tensor, ab: torch.Tensor, quantizer: ABQuantizer, weights: torch.Tensor,
                    cfg: dict) -> torch.Tensor:
    """Class-rebalanced multinomial cross-entropy against soft-encoded targets, mean per pixel."""
    target = quantizer.soft_encode(ab, cfg["neighbours"], cfg["sigma"])
    pixel_weight = weights[target.argmax(1)]  # w of each pixel's nearest bin
    ce = -(target * F.log_softmax(logits, dim=1)).sum(1)
    return (pixel_weight * ce).mean()


def pretrain(ctx: RunContext) -> Representation:
    """Train the L-input trunk to predict quantised ab; returns conv1..conv5 as learned."""
    torch.manual_seed(ctx.seed)
    network = ctx.build_backbone(in_channels=1)
    size = network.spec.input_size
    cfg = _settings(ctx, size)
    initial = copy.deepcopy(network)  # the scale the learned stages are given back at the end
    dirs = cfg["image_dirs"] or default_image_dirs(ctx.data_root)
    images = open_image_pool(dirs, cfg["store_size"], cfg["data"], cfg["data_workers"], ctx.progress,
                             ctx.cache_dir, ctx.log, "colorization pool")
    train_idx, held_idx = split_held_out(len(images), cfg["held_out"], ctx.seed)
    quantizer = ABQuantizer()
    model = prepare_model(ColorizationNet(network, quantizer.q), ctx.device)
    with torch.no_grad():
        out_hw = tuple(model(torch.zeros(1, 1, size, size, device=ctx.device)).shape[-2:])
    prior = bin_prior(subset(images, train_idx), quantizer, size, out_hw, ctx.device)
    weights = quantizer.rebalance_weights(prior, cfg["lam"], cfg["prior_sigma"]).to(ctx.device)
    held = subset(images, held_idx)
    at_init = held_out_accuracy(model, held, quantizer, weights, size, out_hw, ctx)  # before any resume
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.99),
                           weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg["lr"], total_steps=cfg["steps"], pct_start=0.2)
    gen = torch.Generator().manual_seed(ctx.seed)
    loop = PretextSteps(ctx, "colorization", cfg["steps"], cfg["checkpoint_every"],
                        {"model": model, "opt": opt, "sched": sched}, gen)
    start = time.perf_counter()
    model.train()
    for _ in loop:
        idx = train_idx[torch.randint(len(train_idx), (cfg["batch_size"],), generator=gen)]
        rgb = random_crop_batch(images[idx], size, gen, scale=tuple(cfg["crop_scale"])).to(ctx.device)
        l_input, ab = lab_batch(rgb, out_hw)
        loss = rebalanced_loss(model(l_input), ab, quantizer, weights, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loop.record(loss)
    train_seconds = time.perf_counter() - start
    pretext = with_value_at_init(held_out_accuracy(model, held, quantizer, weights, size, out_hw, ctx),
                                 at_init, ctx.log, extra=("value_coloured", "top5"))
    scale = (restore_scales_on(network, initial, images[held_idx[:256]], CONVENTION, LEARNED, ctx.device)
             if cfg["restore_scale"] else None)
    return Representation(network.cpu(), ctx.backbone, CONVENTION, learned_stages=LEARNED, meta={
        "pretrain_data": [str(d) for d in dirs], "pretrain_images": len(train_idx),
        "train_seconds": train_seconds, "pretext": pretext, "final_loss": loop.running.get("loss"),
        "scale_restored": scale, "ab_bins": quantizer.q, "target_grid": list(out_hw)})


SATURATED = 20.0
"""Chroma (|ab|) from which a target cell counts as coloured in ``value_coloured``."""


@torch.no_grad()
def held_out_accuracy(model: ColorizationNet, images: torch.Tensor, quantizer: ABQuantizer,
                      weights: torch.Tensor, size: int, out_hw, ctx: RunContext) -> dict | None:
    """Share of held-out target pixels whose argmax bin is their true (nearest) bin.

    Training with per-class weights w makes the network's softmax estimate w(q) p(q | L) up to
    normalisation, so ``value`` takes the argmax of logits - log w (the model's estimate of
    p(q | L)); ``value_rebalanced`` is the plain argmax of the rebalanced output, which favours
    rare colours by design and is what the paper decodes from (through its annealed mean).
    ``top5`` counts the true bin among the 5 most likely (chance: the 5 most common bins' share);
    ``value_coloured`` is the accuracy on target pixels of chroma >= 20 (where the grey bins
    that dominate ``chance`` cannot be right; its chance is that subset's most common bin).
    """
    if len(images) == 0:
        return None
    model.eval()
    hits = hits_rebalanced = hits5 = total = hits_col = total_col = 0
    log_w = weights.log().view(1, -1, 1, 1)
    counts = torch.zeros(quantizer.q, dtype=torch.int64)
    counts_col = torch.zeros(quantizer.q, dtype=torch.int64)
    for s in range(0, len(images), 256):
        l_input, ab = lab_batch(center_crop_batch(images[s:s + 256].to(ctx.device), size), out_hw)
        truth = quantizer.encode(ab)
        logits = model(l_input)
        estimate = logits - log_w
        right = estimate.argmax(1) == truth
        coloured = ab.norm(dim=1) >= SATURATED
        hits += right.sum().item()
        hits_rebalanced += (logits.argmax(1) == truth).sum().item()
        hits5 += (estimate.topk(5, dim=1).indices == truth[:, None]).any(1).sum().item()
        hits_col += (right & coloured).sum().item()
        total += truth.numel()
        total_col += coloured.sum().item()
        counts += torch.bincount(truth.flatten().cpu(), minlength=quantizer.q)
        counts_col += torch.bincount(truth[coloured].cpu(), minlength=quantizer.q)
    return {"metric": "ab-bin-accuracy", "value": hits / total, "chance": counts.max().item() / total,
            "value_rebalanced": hits_rebalanced / total,
            "top5": hits5 / total, "chance_top5": counts.topk(5).values.sum().item() / total,
            "value_coloured": hits_col / max(total_col, 1),
            "chance_coloured": counts_col.max().item() / max(total_col, 1),
            "coloured_share": total_col / total, "held_out_pixels": total}


@hookimpl
def benchharness_methods():
    """Colorization from the L channel on unlabelled images."""
    return [Method("colorization", "self-sup", ("images",), pretrain,
                   "colorful image colorization: ab bins from L, class-rebalanced (Zhang et al. 2016)")]
