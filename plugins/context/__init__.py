"""``context``: context prediction (Doersch, Gupta, Efros 2015), group ``self-sup``.

Two patches are cut from a 3 x 3 grid laid on an unlabelled image (a gap between the cells and
a random jitter of each patch, :mod:`benchharness_plugins.context.patches`): the centre cell and one of its
8 neighbours. Both go through the same trunk up to fc6; the two fc6 vectors, concatenated, feed
two new fc layers and an 8-way softmax that names where the second patch came from. Against the
paper's trivial shortcuts: chromatic aberration is removed by projecting out the green-magenta
axis (``chroma = "project"``, the default) or by colour dropping (``"drop"``: two of the three
channels replaced by faint noise), and some patches are downsampled so that fine texture at the
edges cannot be matched.

As in the paper (96-pixel patches into a network whose fc6 then sees a 3 x 3 pool5 map), the
trunk sees patches near their own resolution: ``patch_input`` pixels, by default half the
backbone's input side (32 for ``alexnet-small``), rather than blown up to the full input side,
which would cost four times as much and teach conv1 the statistics of blurred pixels. (At 32
pixels the small trunk's pool5 is 1 x 1, which its adaptive pool spreads over fc6's 3 x 3
input; at 64 pixels, on whole images, fc6 then sees a real 3 x 3 map.) Learned stages: conv1..conv5 and fc6 (fc7 is not part of the pretext network and stays random).
A trunk trained without normalisation layers drifts in scale (the pair head absorbs any factor);
at the end the learned stages get back the output scale they had at initialisation
(:func:`~benchharness.data.loading.pretext_pool.restore_scales_on`: one positive factor per stage,
which leaves what the network computes unchanged up to scale). The pretext measurement is 8-way
accuracy on pairs from held-out images (chance 1/8; ``value_at_init``, the untrained network's
on the same pairs). Training state is saved every
``checkpoint_every`` steps, so a killed pretraining resumes.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import roi_align

from benchharness import hookimpl
from benchharness.accel import prepare_model
from benchharness.backbones import CONV_STAGES
from benchharness.data.loading.pretext_pool import (default_image_dirs, open_image_pool,
                                                    restore_scales_on, split_held_out, subset)
from benchharness.interfaces import Method, RunContext
from benchharness.representation import InputConvention, Representation
from benchharness.training import PretextSteps, with_value_at_init
from .patches import PatchGrid

DEFAULTS = {
    "data": "auto", "data_workers": 2,  # pool in memory, streamed from disk, or by size
    "steps": 480, "batch_size": 32, "neighbours": 8, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
    # geometry, as fractions of the backbone's input side when left at None
    "store_size": None, "patch": None, "gap": None, "jitter": None,
    "patch_input": None,       # side at which patches enter the trunk
    "chroma": "project",       # project | drop | none (the paper's two countermeasures, or none)
    "downsample_p": 0.25,      # share of patches shrunk to downsample_side and blown up again
    "downsample_side": 10,     # 10 x 10 = 100 pixels, as in the paper
    "held_out": 0.1, "eval_grids": 2, "image_dirs": None, "seed": 0,
    "checkpoint_every": 100, "restore_scale": True,
}
GEOMETRY = {"store_size": 1.5, "patch": 0.34, "gap": 0.16, "jitter": 0.05, "patch_input": 0.5}
LEARNED = CONV_STAGES + ("fc6",)
GREEN_MAGENTA = torch.tensor([-1.0, 2.0, -1.0]) / 6 ** 0.5


def _settings(ctx: RunContext, input_size: int) -> dict:
    unknown = set(ctx.config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"context: unknown settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **ctx.config}
    for key, fraction in GEOMETRY.items():
        if cfg[key] is None:
            cfg[key] = max(1, round(fraction * input_size))
    if cfg["chroma"] not in ("drop", "project", "none"):
        raise ValueError(f"context: chroma must be drop, project or none, not {cfg['chroma']!r}")
    for key in ("steps", "batch_size", "checkpoint_every"):
        if int(cfg[key]) < 1:
            raise ValueError(f"context: {key} must be at least 1, not {cfg[key]!r}")
    if not 1 <= int(cfg["neighbours"]) <= 8:
        raise ValueError(f"context: neighbours must be in 1..8, not {cfg['neighbours']!r}")
    return cfg


class ContextNet(nn.Module):
    """The siamese pretext network: shared trunk through fc6, then fc, fc and an 8-way output."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk
        d = trunk.out_dim
        self.head = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(inplace=True), nn.Linear(d, 8))

    def forward(self, centre: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """Logits [n * k, 8] for centre patches [n, ...] and their neighbours [n * k, ...]
        (grouped by centre): the centre's features are computed once for its k pairs."""
        features = self.trunk.forward_to(torch.cat([centre, other]), "fc6")
        a, b = features[:len(centre)], features[len(centre):]
        a = a.repeat_interleave(len(other) // len(centre), dim=0)
        return self.head(torch.cat([a, b], dim=1))


def drop_colours(patches: torch.Tensor, mean: tuple[float, ...], generator: torch.Generator) -> torch.Tensor:
    """Keep one random channel of each patch; the other two become their channel mean plus
    Gaussian noise of 1/100 the kept channel's standard deviation (the paper's colour dropping)."""
    n = len(patches)
    keep = torch.randint(0, 3, (n,), generator=generator)
    dropped = torch.ones(n, 3, dtype=torch.bool)
    dropped[torch.arange(n), keep] = False
    kept = patches[torch.arange(n), keep.to(patches.device)]  # [n, H, W]
    scale = kept.flatten(1).std(1).view(n, 1, 1, 1) / 100
    noise = torch.randn(patches.shape, generator=generator).to(patches) * scale
    fill = torch.tensor(mean, dtype=patches.dtype, device=patches.device).view(1, 3, 1, 1) + noise
    return torch.where(dropped.to(patches.device)[:, :, None, None], fill, patches)


def project_green_magenta(patches: torch.Tensor) -> torch.Tensor:
    """Remove each pixel's component along the green-magenta axis (around mid-grey)."""
    v = GREEN_MAGENTA.to(patches).view(1, 3, 1, 1)
    component = ((patches - 0.5) * v).sum(1, keepdim=True)
    return (patches - component * v).clamp(0, 1)


def downsample_some(patches: torch.Tensor, p: float, side: int, generator: torch.Generator) -> torch.Tensor:
    """Shrink a random share ``p`` of the patches to ``side`` pixels and resize them back."""
    chosen = (torch.rand(len(patches), generator=generator) < p).to(patches.device)
    if p <= 0 or not chosen.any():
        return patches
    size = patches.shape[-2:]
    small = F.interpolate(patches[chosen], size=(side, side), mode="area")
    out = patches.clone()
    out[chosen] = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
    return out


def make_pairs(images: torch.Tensor, grid: PatchGrid, size: int, cfg: dict, convention: InputConvention,
               generator: torch.Generator, device: torch.device):
    """Network-ready patches from uint8 images [n, 3, S, S]: centres [n, 3, size, size],
    ``cfg["neighbours"]`` neighbours per centre [n * k, 3, size, size] and labels [n * k]."""
    n, k = len(images), cfg["neighbours"]
    flip = torch.rand(n, generator=generator) < 0.5  # mirror whole images, not patches
    images = torch.where(flip[:, None, None, None], images.flip(-1), images).to(device)
    centre, other, labels = grid.sample(n, images.shape[-1], generator, per_centre=k)
    # every box indexes its own image: the n images are converted once, not copied k + 1 times
    owner = torch.cat([torch.arange(n), torch.arange(n).repeat_interleave(k)])
    boxes = torch.cat([centre, other.reshape(n * k, 4)])
    rois = torch.cat([owner[:, None].float(), boxes], dim=1).to(device)
    patches = roi_align(images.float().div_(255), rois, output_size=(size, size), spatial_scale=1.0,
                        sampling_ratio=2, aligned=True).clamp_(0, 1)
    if cfg["chroma"] == "drop":
        patches = drop_colours(patches, convention.mean, generator)
    elif cfg["chroma"] == "project":
        patches = project_green_magenta(patches)
    patches = downsample_some(patches, cfg["downsample_p"], cfg["downsample_side"], generator)
    patches = convention.normalise(patches)
    return patches[:n], patches[n:], labels.reshape(n * k).to(device)


def pretrain(ctx: RunContext) -> Representation:
    """Train the trunk on 8-way relative patch position; returns conv1..fc6 as learned."""
    torch.manual_seed(ctx.seed)
    network = ctx.build_backbone()
    size = network.spec.input_size
    cfg = _settings(ctx, size)
    grid = PatchGrid(cfg["patch"], cfg["gap"], cfg["jitter"])
    patch_input = int(cfg["patch_input"])
    try:
        with torch.no_grad():
            network.forward_to(torch.zeros(1, 3, patch_input, patch_input), "fc6")
    except RuntimeError as exc:
        raise ValueError(f"context: patch_input {patch_input} is too small for the "
                         f"{ctx.backbone} trunk ({exc})") from None
    initial = copy.deepcopy(network)  # the scale the learned stages are given back at the end
    dirs = cfg["image_dirs"] or default_image_dirs(ctx.data_root)
    images = open_image_pool(dirs, cfg["store_size"], cfg["data"], cfg["data_workers"], ctx.progress,
                             ctx.cache_dir, ctx.log, "context pool")
    train_idx, held_idx = split_held_out(len(images), cfg["held_out"], ctx.seed)
    convention = InputConvention()
    model = prepare_model(ContextNet(network), ctx.device)
    held = subset(images, held_idx)
    at_init = held_out_accuracy(model, held, grid, patch_input, cfg, convention, ctx)  # before any resume
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                          weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg["lr"], total_steps=cfg["steps"], pct_start=0.2)
    gen = torch.Generator().manual_seed(ctx.seed)
    loop = PretextSteps(ctx, "context", cfg["steps"], cfg["checkpoint_every"],
                        {"model": model, "opt": opt, "sched": sched}, gen,
                        extra=lambda: {"order": batches.order, "position": batches.position})
    resumed = loop.resumed or {}
    batches = _batches(train_idx, cfg["batch_size"], gen, resumed.get("order"), resumed.get("position", 0))
    start = time.perf_counter()
    model.train()
    for _ in loop:
        a, b, labels = make_pairs(images[next(batches)], grid, patch_input, cfg, convention, gen,
                                  ctx.device)
        loss = F.cross_entropy(model(a, b), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loop.record(loss)
    train_seconds = time.perf_counter() - start
    pretext = with_value_at_init(held_out_accuracy(model, held, grid, patch_input, cfg, convention, ctx),
                                 at_init, ctx.log)
    scale = (restore_scales_on(network, initial, images[held_idx[:256]], convention, LEARNED, ctx.device)
             if cfg["restore_scale"] else None)
    return Representation(network.cpu(), ctx.backbone, convention, learned_stages=LEARNED, meta={
        "pretrain_data": [str(d) for d in dirs], "pretrain_images": len(train_idx),
        "train_seconds": train_seconds, "pretext": pretext, "final_loss": loop.running.get("loss"),
        "scale_restored": scale,
        "grid": {"patch": grid.patch, "gap": grid.gap, "jitter": grid.jitter,
                 "store_size": cfg["store_size"], "patch_input": patch_input}})


class _batches:
    """Endless batches of ``indices``, reshuffled at every pass; the ``order`` / ``position``
    attributes, saved and passed back, let a resumed run continue the same sequence."""

    def __init__(self, indices: torch.Tensor, batch_size: int, generator: torch.Generator,
                 order: torch.Tensor | None = None, position: int = 0):
        self.indices, self.batch_size, self.generator = indices, batch_size, generator
        self.order, self.position = order, position

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        last = max(1, len(self.indices) - self.batch_size + 1)
        if self.order is None or self.position >= last:
            self.order = self.indices[torch.randperm(len(self.indices), generator=self.generator)]
            self.position = 0
        batch = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return batch


@torch.no_grad()
def held_out_accuracy(model: ContextNet, images: torch.Tensor, grid: PatchGrid, size: int, cfg: dict,
                      convention: InputConvention, ctx: RunContext) -> dict | None:
    """8-way accuracy over the 8 neighbours of ``eval_grids`` seeded grids per held-out image
    (preprocessed as in training)."""
    if len(images) == 0:
        return None
    model.eval()
    gen = torch.Generator().manual_seed(12_345)
    correct = total = 0
    cfg = {**cfg, "neighbours": 8}
    for _ in range(cfg["eval_grids"]):
        for s in range(0, len(images), 32):
            a, b, labels = make_pairs(images[s:s + 32], grid, size, cfg, convention, gen, ctx.device)
            correct += (model(a, b).argmax(1) == labels).sum().item()
            total += len(labels)
    return {"metric": "8-way-accuracy", "value": correct / total, "chance": 1 / 8,
            "held_out_pairs": total}


@hookimpl
def benchharness_methods():
    """Context prediction on unlabelled images."""
    return [Method("context", "self-sup", ("images",), pretrain,
                   "context prediction: relative position of two patches (Doersch et al. 2015)")]
