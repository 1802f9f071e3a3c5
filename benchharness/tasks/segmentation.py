"""VOC 2012 semantic segmentation transfer (``voc12-seg``) with FCN-32s (Long et al. 2015).

Protocols: ``all`` (everything fine-tunes) and ``fc6-8`` (conv1..conv5 frozen).

Training on ``ImageSets/Segmentation/train`` (``voc_train``) plus, when ``sbd_root`` is set, the
images of SBD's ``sbd_splits`` (Hariharan et al. 2011) that are not in the test split. FCN's
reference (``voc-fcn-alexnet``) trains on SBD ``train`` alone and tests on ``seg11valid``
(:mod:`..data.voc.sbd`), which ``test_split = "seg11valid"`` selects. Images at their own size (or
the short side resized to ``scale``), mirrored at random when ``flip``, ``batch_size`` padded
into one minibatch; per-pixel softmax loss ignoring the void label 255 (and the padding),
normalised as Caffe's ``SoftmaxWithLoss`` (``loss_normalization``); SGD with momentum, each
step accumulating ``iter_size`` minibatches (Caffe's gradient accumulation), for ``epochs``
or ``iterations`` steps, the rate fixed (``lr_steps = 0``), stepped or divided every
``stepsize`` steps. Testing: class scores upsampled to the original image size, arg-max per
pixel. Scored with ``miou`` (one confusion matrix over the whole split).

``all`` trains data-parallel on several processes (``run --gpus-per-job N``): every rank draws
the whole minibatch (order, flips), runs the network on its contiguous share and
backpropagates its part of the whole minibatch's loss, normalised by the whole minibatch's
labelled pixels or images (:mod:`benchharness.distributed`); with ``batch_size`` below the
number of processes (FCN's 1) the ranks take turns over the ``iter_size`` accumulated
minibatches instead, which needs ``iter_size`` at least the number of processes. Each share is padded to the whole minibatch's size (FCN's scores
near an image's bottom and right borders depend on how far the padding reaches), so the
weights match one process's to float tolerance for trunks without dropout (with dropout each
rank draws its own masks). Rank 0 alone segments; ``info["distributed"]`` states the world
size, the global batch (``batch_size x iter_size`` images) and lr.
"""

from __future__ import annotations

import contextlib

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .. import distributed
from ..accel import autocast, peak_memory_mb, prepare_model, reset_peak_memory
from ..data.voc.classes import IGNORE_LABEL
from ..data.voc.devkit import VOCDevkit, locate_devkit
from ..data.voc.sbd import SEG11VALID, read_sbd, seg11valid
from ..evaluators.ground_truth import SEG_CLASSES, seg_ground_truth
from ..hookspecs import hookimpl
from ..interfaces import Predictions, SegGroundTruth, RunContext, Task, TransferOutput
from ..representation import Representation
from ..rescale import INIT_IMAGES, rescaled
from ..training import LossGuard, sgd_step
from .settings import from_suite_section, solver_steps, step_schedule, under_data_root
from .batching import normalised_batch, pad_to
from .fcn import FCN32s

PROTOCOLS = ("all", "fc6-8")
LOSS_NORMALIZATIONS = ("valid", "batch_size", "none")


@dataclass
class SegConfig:
    """Settings of one segmentation transfer; every field can be set in the suite file."""

    year: str = "2012"
    train_split: str = "train"
    test_split: str = "val"  # or "seg11valid" (FCN's; see data/voc/sbd.py)
    voc_train: bool = True  # the VOC train split trains
    sbd_root: str = ""  # SBD's benchmark_RELEASE/dataset (img/, cls/, train.txt, val.txt);
    # a relative path is looked up under the data root first
    sbd_splits: tuple[str, ...] = ("train", "val")  # SBD splits that train (FCN: train)
    scale: int = 0  # short side of the network's input; 0: images at their own size
    epochs: int = 30
    iterations: int = 0  # solver steps; 0: `epochs` passes over the training images
    batch_size: int = 8
    iter_size: int = 1  # minibatches accumulated per solver step (Caffe's iter_size)
    loss_normalization: str = "valid"  # Caffe's: valid (mean over labelled pixels), batch_size, none
    lr: float = 0.001
    lr_pretrained: float = 0.0  # lr of pretrained stages that train; 0: same as lr
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: int = 1  # 0: fixed rate (Caffe's "fixed" policy)
    step_at: float = 0.8
    stepsize: int = 0  # Caffe's step policy: lr / 10 every `stepsize` steps (overrides lr_steps)
    flip: bool = True
    train_upsampling: bool = False  # True: learn it; FCN fixes its bilinear upsampling (lr_mult 0)
    test_batch: int = 8
    rescale: bool = False  # Krahenbuhl et al.'s magic_init (run --rescale) before training
    rescale_images: int = INIT_IMAGES  # training images it runs on
    amp: str = "auto"
    metric: str = "miou"
    extra_metrics: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, config, protocol: str) -> "SegConfig":
        """Top-level keys of the task's suite section, overridden by its ``[protocol]`` table."""
        cfg = from_suite_section(cls, "voc12-seg", PROTOCOLS, config, protocol)
        if cfg.loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(f"voc12-seg: loss_normalization must be one of {LOSS_NORMALIZATIONS}, "
                             f"got {cfg.loss_normalization!r}")
        for name in ("batch_size", "iter_size"):
            if getattr(cfg, name) < 1:
                raise ValueError(f"voc12-seg: {name} must be at least 1, got {getattr(cfg, name)}")
        if not cfg.voc_train and not (cfg.sbd_root and cfg.sbd_splits):
            raise ValueError("voc12-seg: voc_train = false needs sbd_root and sbd_splits "
                             "(nothing would train)")
        return cfg


def resize_pair(image: torch.Tensor, mask: torch.Tensor | None, scale: int):
    """Resize so that the short side is ``scale`` (bilinear image, nearest mask); 0 keeps them."""
    if not scale:
        return image, mask
    h, w = image.shape[-2:]
    size = [max(1, round(h * scale / min(h, w))), max(1, round(w * scale / min(h, w)))]
    image = TF.resize(image, size, antialias=True)
    if mask is not None:
        mask = TF.resize(mask[None], size, interpolation=InterpolationMode.NEAREST)[0]
    return image, mask


def load_train(devkit: VOCDevkit, cfg: SegConfig, exclude: set[str], ctx: RunContext):
    """Training images (uint8 [3, h, w]) and masks (uint8 [h, w]) at the network's scale."""
    images, masks, voc_ids = [], [], []
    if cfg.voc_train:
        gt = seg_ground_truth(devkit, cfg.year, cfg.train_split)
        voc_ids = list(gt.image_ids)
        for image_id in ctx.bar(voc_ids, desc=f"load VOC{cfg.year} {cfg.train_split}", leave=False):
            image, mask = resize_pair(devkit.load_image(cfg.year, image_id),
                                      torch.from_numpy(gt.mask(image_id)), cfg.scale)
            images.append(image)
            masks.append(mask)
    n_sbd = 0
    if cfg.sbd_root and cfg.sbd_splits:
        for _, image, mask in ctx.bar(read_sbd(cfg.sbd_root, exclude | set(voc_ids), cfg.sbd_splits),
                                      desc="load SBD", leave=False):
            image, mask = resize_pair(image, torch.from_numpy(mask), cfg.scale)
            images.append(image)
            masks.append(mask)
            n_sbd += 1
    return images, masks, n_sbd


def test_ground_truth(devkit: VOCDevkit, cfg: SegConfig) -> tuple[SegGroundTruth, str]:
    """The test split's ground truth and where its ids came from."""
    if cfg.test_split == SEG11VALID:
        ids, source = seg11valid(devkit, cfg.year, cfg.sbd_root)
        return SegGroundTruth(SEG_CLASSES, ids, partial(devkit.read_mask, cfg.year),
                              ignore_label=IGNORE_LABEL), source
    gt = seg_ground_truth(devkit, cfg.year, cfg.test_split)
    return gt, f"ImageSets/Segmentation/{cfg.test_split}.txt"


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, normalization: str = "valid"
                      ) -> torch.Tensor:
    """Per-pixel softmax loss, summed over the labelled pixels (label 255 left out) and divided
    as Caffe's ``SoftmaxWithLoss`` does: ``valid`` by their count (``normalize: true``),
    ``batch_size`` by the number of images (``normalize: false``), ``none`` not at all."""
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_LABEL, reduction="sum")
    if normalization == "valid":
        return total / (labels != IGNORE_LABEL).sum().clamp(min=1)
    if normalization == "batch_size":
        return total / len(labels)
    if normalization == "none":
        return total
    raise ValueError(f"loss normalization must be one of {LOSS_NORMALIZATIONS}, got {normalization!r}")


def loss_divisor(masks, normalization: str = "valid") -> int:
    """What :func:`segmentation_loss` divides a minibatch's summed loss by, from its uint8
    masks (unpadded): labelled pixels (at least 1), images, or 1."""
    if normalization == "valid":
        return max(1, sum(int((m != IGNORE_LABEL).sum()) for m in masks))
    if normalization == "batch_size":
        return len(masks)
    if normalization == "none":
        return 1
    raise ValueError(f"loss normalization must be one of {LOSS_NORMALIZATIONS}, got {normalization!r}")


def label_batch(masks, device) -> torch.Tensor:
    """int64 labels [B, H, W] of uint8 masks, padded at the bottom and right with the ignore
    value (to match :func:`.batching.normalised_batch` of their images)."""
    h = max(m.shape[-2] for m in masks)
    w = max(m.shape[-1] for m in masks)
    y = torch.full((len(masks), h, w), IGNORE_LABEL, dtype=torch.int64, device=device)
    for k, m in enumerate(masks):
        y[k, :m.shape[-2], :m.shape[-1]] = m.to(device).long()
    return y


def training_steps(n_images: int, cfg: SegConfig) -> tuple[int, int]:
    """(solver steps per pass over the training images, solver steps in all); a step takes
    ``batch_size * iter_size`` images."""
    return solver_steps(n_images, cfg.batch_size * cfg.iter_size, cfg.iterations, cfg.epochs)


def train(model: FCN32s, images, masks, cfg: SegConfig, ctx: RunContext) -> float:
    """Fit FCN-32s with the per-pixel softmax loss; returns the mean loss of the last pass
    over the training images (per solver step)."""
    device = ctx.device
    opt = torch.optim.SGD(model.param_groups(cfg.lr, cfg.lr_pretrained), momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    per_pass, total = training_steps(len(images), cfg)
    sched = step_schedule(opt, total, cfg.lr_steps, cfg.step_at, cfg.stepsize)
    gen = torch.Generator().manual_seed(ctx.seed)
    net = prepare_model(model, device)
    ddp_net = distributed.wrap(net) if distributed.active() else None
    model.train()
    pass_loss, guard = float("nan"), LossGuard("voc12-seg training")
    running = 0.0
    rank, size = distributed.world()
    # fewer images per minibatch than processes (FCN's batch 1 x iter_size 20): the ranks take
    # turns over the accumulated minibatches instead, syncing gradients after their last one
    by_turns = ddp_net is not None and cfg.batch_size < size
    if by_turns and cfg.iter_size < size:
        raise ValueError(f"voc12-seg: batch_size {cfg.batch_size} x iter_size {cfg.iter_size} cannot "
                         f"be split among {size} processes")
    last_turn = max(m for m in range(cfg.iter_size) if m % size == rank) if by_turns else None
    for it in ctx.bar(range(total), desc="train", leave=False):
        step = it % per_pass
        if step == 0:
            order = torch.randperm(len(images), generator=gen).tolist()
            flips = torch.rand(len(images), generator=gen) < 0.5
            running = 0.0
        # not training.sgd_step: Caffe's iter_size accumulates gradients over several
        # minibatches and steps once on their mean
        opt.zero_grad(set_to_none=True)
        for micro in range(cfg.iter_size):
            if by_turns and micro % size != rank:
                continue
            start = (step * cfg.iter_size + micro) * cfg.batch_size
            idx = [order[k % len(images)] for k in range(start, start + cfg.batch_size)]
            if by_turns:  # this rank's whole minibatch, normalised as in one process
                divisor = loss_divisor([masks[i] for i in idx], cfg.loss_normalization)
            elif ddp_net is not None:  # this rank's share, padded and normalised as the whole
                divisor = loss_divisor([masks[i] for i in idx], cfg.loss_normalization)
                whole = (max(masks[i].shape[-2] for i in idx), max(masks[i].shape[-1] for i in idx))
                idx = distributed.shard(idx)
            flip = [cfg.flip and bool(flips[i]) for i in idx]
            x = normalised_batch([images[i].flip(-1) if f else images[i] for i, f in zip(idx, flip)],
                                 model.input, device)
            y = label_batch([masks[i].flip(-1) if f else masks[i] for i, f in zip(idx, flip)], device)
            if ddp_net is not None and not by_turns:
                x, y = pad_to(x, *whole), pad_to(y, *whole, value=IGNORE_LABEL)
            no_sync = ddp_net.no_sync() if by_turns and micro != last_turn else contextlib.nullcontext()
            with no_sync:
                with autocast(device, cfg.amp), distributed.own_randomness():
                    logits = (net if ddp_net is None else ddp_net)(x)
                if ddp_net is not None:
                    part = segmentation_loss(logits, y, "none")
                    loss = distributed.global_mean(part, divisor) / cfg.iter_size
                else:
                    loss = segmentation_loss(logits, y, cfg.loss_normalization) / cfg.iter_size
                loss.backward()
            running += loss.detach()
        opt.step()
        sched.step()
        if step == per_pass - 1 or it == total - 1:
            pass_loss = distributed.average(float(running) / (step + 1))
            guard.check(pass_loss, it // per_pass)
    return pass_loss


@torch.no_grad()
def predict(model: FCN32s, devkit: VOCDevkit, image_ids, cfg: SegConfig, ctx: RunContext):
    """Per image id a uint8 [H, W] mask of class indices at the original image size."""
    net = prepare_model(model, ctx.device).eval()
    masks = {}
    for start in ctx.bar(range(0, len(image_ids), cfg.test_batch), desc="segment", leave=False):
        ids = image_ids[start:start + cfg.test_batch]
        originals = [devkit.load_image(cfg.year, i) for i in ids]
        resized = [resize_pair(im, None, cfg.scale)[0] for im in originals]
        x = normalised_batch(resized, model.input, ctx.device)
        with autocast(ctx.device, cfg.amp):
            logits = net(x)
        for k, image_id in enumerate(ids):
            h, w = resized[k].shape[-2:]
            scores = logits[k:k + 1, :, :h, :w].float()
            if (h, w) != tuple(originals[k].shape[-2:]):
                scores = F.interpolate(scores, size=tuple(originals[k].shape[-2:]), mode="bilinear",
                                       align_corners=False)
            masks[image_id] = scores[0].argmax(0).to(torch.uint8).cpu().numpy()
    return masks


@distributed.supports(protocols=("all",))
def transfer(representation: Representation, protocol: str, ctx: RunContext) -> TransferOutput:
    """Train FCN-32s on the train split under ``protocol`` and segment the test split."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"voc12-seg: unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    cfg = SegConfig.from_mapping(ctx.config, protocol)
    cfg.sbd_root = under_data_root(cfg.sbd_root, ctx.data_root)
    torch.manual_seed(ctx.seed)
    devkit = VOCDevkit(locate_devkit(ctx.data_root))
    t0 = time.perf_counter()
    test_gt, test_source = test_ground_truth(devkit, cfg)
    images, masks, n_sbd = load_train(devkit, cfg, set(test_gt.image_ids), ctx)
    reset_peak_memory(ctx.device)
    t_data = time.perf_counter() - t0
    rescale_stats = None
    if cfg.rescale:
        representation, rescale_stats = rescaled(representation, images, cfg.rescale_images, ctx.device)
    model = FCN32s(representation, len(SEG_CLASSES), frozen_conv=protocol == "fc6-8",
                   train_upsampling=cfg.train_upsampling)
    final_loss = train(model, images, masks, cfg, ctx)
    t_train = time.perf_counter() - t0 - t_data
    if not distributed.is_main():
        return None  # under several processes rank 0 alone segments and reports
    predicted = predict(model, devkit, list(test_gt.image_ids), cfg, ctx)
    t_total = time.perf_counter() - t0
    return TransferOutput(
        predictions=Predictions("seg", SEG_CLASSES, test_gt.image_ids, masks=predicted),
        ground_truth=test_gt, metric=cfg.metric, extra_metrics=cfg.extra_metrics,
        timing={"data": t_data, "train": t_train, "predict": t_total - t_data - t_train,
                "transfer": t_total},
        info={"split": cfg.test_split, "split_source": test_source, "year": cfg.year,
              "final_loss": final_loss,
              "train_images": len(images), "sbd_images": n_sbd,
              "test_images": len(test_gt.image_ids), "frozen": list(model.frozen),
              "epochs": cfg.epochs, "iterations": training_steps(len(images), cfg)[1],
              "iter_size": cfg.iter_size, "batch_size": cfg.batch_size,
              "loss_normalization": cfg.loss_normalization, "scale": cfg.scale, "amp": cfg.amp,
              "rescale": rescale_stats,
              "peak_memory_mb": peak_memory_mb(ctx.device),
              **_distributed_info(cfg)},
    )


def _distributed_info(cfg: SegConfig) -> dict:
    """``{"distributed": ...}`` when training ran on several processes, else nothing."""
    found = distributed.describe(cfg.batch_size * cfg.iter_size, cfg.lr, split=cfg.batch_size)
    return {"distributed": found} if found else {}


@hookimpl
def benchharness_tasks():
    """VOC 2012 semantic segmentation with FCN-32s under the all and fc6-8 protocols."""
    return [Task("voc12-seg", PROTOCOLS, ("voc2012",), transfer,
                 "PASCAL VOC 2012 semantic segmentation, FCN-32s")]
