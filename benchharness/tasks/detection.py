"""VOC 2007 object detection transfer (``voc07-det``) with Fast R-CNN (Girshick 2015).

Protocols, over the representation's fixed stage names:

- ``all``: everything fine-tunes (the published column);
- ``fc6-8``: conv1..conv5 frozen; fc6, fc7 and the new heads train.

Training follows Fast R-CNN: each image's short side resized to ``scale`` pixels, or to one of
``scales`` picked at random per image and iteration (multi-scale training), the long side at
most ``max_size``; horizontal flips; minibatches of ``images_per_batch`` images x
``rois_per_image`` RoIs of which 25% foreground (IoU >= 0.5 with a ground-truth box, the
ground-truth boxes themselves included) and the rest background (IoU in [0.1, 0.5)); softmax +
smooth-L1 multi-task loss (box targets normalised as ``bbox_normalization`` says); SGD with
momentum and step decay, for ``epochs`` or (``iterations`` > 0) that many minibatches, the rate
divided by 10 every ``stepsize`` iterations when set. 'difficult' objects are left out of
training, as in Fast R-CNN. Testing: every proposal scored at ``test_scales`` (default: the
training scales); with several, each image runs as a pyramid and each proposal is scored at
the one scale where its area is closest to 224 x 224 (Fast R-CNN's ``_project_im_rois``).
Boxes regressed per class, per-class NMS at IoU 0.3, at most 100 detections per image.
Proposals come from selective search (cached on disk, see :mod:`.proposals`) or from user
files (``proposals``, ``proposals_trainval``, ``proposals_test``). Scored with ``voc07-11pt``
(``coco-ap50`` in ``per_metric``).

``all`` trains data-parallel on several processes (``run --gpus-per-job N``): every rank draws
and samples the whole minibatch (the RoI sampler draws from torch's global generator, so all
ranks keep it in step), runs the network on its share of the images and backpropagates its
part of the whole minibatch's loss, divided by the whole minibatch's RoI count
(:mod:`benchharness.distributed`); ``images_per_batch`` must be at least the number of
processes. Each share is padded to the whole minibatch's size, as border RoIs depend on the
padding, so the weights match one process's to float tolerance for trunks without dropout
(with dropout each rank draws its masks from a stream of its own). Rank 0 alone
detects; ``info["distributed"]`` states the world size, the global batch (in images) and lr.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import distributed
from ..accel import autocast, peak_memory_mb, prepare_model, reset_peak_memory
from ..data.voc.classes import VOC_CLASSES
from ..data.voc.devkit import VOCDevkit, locate_devkit
from ..evaluators.ground_truth import det_ground_truth
from ..hookspecs import hookimpl
from ..interfaces import ClassDetections, DetGroundTruth, Predictions, RunContext, Task, TransferOutput
from ..representation import Representation
from ..rescale import INIT_IMAGES, rescaled
from ..training import LossGuard, sgd_step
from .settings import from_suite_section, solver_steps, step_schedule, under_data_root
from .batching import normalised_batch, pad_to
from .fast_rcnn import (FastRCNN, RoiSampler, box_coder, detect, fast_rcnn_loss, fast_rcnn_loss_sum,
                        regression_stats)
from .proposals import split_proposals, to_continuous, to_voc

PROTOCOLS = ("all", "fc6-8")
CLASS_INDEX = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}  # 0 is background


@dataclass
class DetConfig:
    """Settings of one detection transfer; every field can be set in the suite file."""

    year: str = "2007"
    train_split: str = "trainval"
    test_split: str = "test"
    scale: int = 600  # short side of the network's input, in pixels (when `scales` is empty)
    scales: tuple[int, ...] = ()  # training short sides, one picked at random per image
    test_scales: tuple[int, ...] = ()  # test image pyramid; empty: the training scales
    max_size: int = 1000  # cap on the long side
    # or a .mat / .npz file, or a folder of voc_2007_<split>.mat|npz (relative: under the data
    # root when there, as the synthetic world's selective_search_data)
    proposals: str = "selective_search"
    proposals_trainval: str = ""  # the trainval split's file (overrides `proposals`)
    proposals_test: str = ""  # the test split's file (overrides `proposals`)
    ss_mode: str = "fast"
    ss_workers: int = 2
    epochs: int = 16
    iterations: int = 0  # minibatches to train; 0: `epochs` passes over the split
    images_per_batch: int = 2
    rois_per_image: int = 64
    fg_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_low: float = 0.1
    bbox_normalization: str = "fixed"  # box targets / (0.1, 0.1, 0.2, 0.2); "data": and then by
    # the per-class means and stds of the training RoIs' targets (Fast R-CNN's)
    gt_as_proposals: bool = True  # the ground-truth boxes join the training proposals
    flip: bool = True
    lr: float = 0.001
    lr_pretrained: float = 0.0  # lr of pretrained stages that train; 0: same as lr
    bias_lr_mult: float = 1.0  # biases learn this many times faster (Caffe's lr_mult: 2)
    head_bias_decay: bool = True  # weight decay on the new heads' biases (Fast R-CNN: none)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: int = 1  # lr / 10 this many times, evenly spaced (Fast R-CNN: once, at 80%)
    step_at: float = 0.8  # with one step: when, as a fraction of training
    stepsize: int = 0  # Caffe's step policy: lr / 10 every `stepsize` iterations (overrides lr_steps)
    test_batch: int = 8
    score_thresh: float = 0.01
    nms: float = 0.3
    max_per_image: int = 100
    rescale: bool = False  # Krahenbuhl et al.'s magic_init (run --rescale) before training
    rescale_images: int = INIT_IMAGES  # training images it runs on
    amp: str = "auto"
    metric: str = "voc07-11pt"
    extra_metrics: tuple[str, ...] = ("coco-ap50",)

    @classmethod
    def from_mapping(cls, config, protocol: str) -> "DetConfig":
        """Top-level keys of the task's suite section, overridden by its ``[protocol]`` table."""
        cfg = from_suite_section(cls, "voc07-det", PROTOCOLS, config, protocol)
        for name in ("scale", "max_size", "iterations", "stepsize", "epochs"):
            if getattr(cfg, name) < 0 or (name in ("scale", "max_size") and getattr(cfg, name) == 0):
                raise ValueError(f"voc07-det: {name} must be positive, got {getattr(cfg, name)}")
        if cfg.bbox_normalization not in ("fixed", "data"):
            raise ValueError(f"voc07-det: bbox_normalization must be 'fixed' or 'data', "
                             f"got {cfg.bbox_normalization!r}")
        if any(s <= 0 for s in (*cfg.scales, *cfg.test_scales)):
            raise ValueError(f"voc07-det: scales must be positive, got {cfg.scales} / {cfg.test_scales}")
        return cfg

    @property
    def train_scales(self) -> tuple[int, ...]:
        """Short sides training picks from."""
        return tuple(self.scales) or (self.scale,)

    @property
    def pyramid(self) -> tuple[int, ...]:
        """Short sides of the test image pyramid."""
        return tuple(self.test_scales) or self.train_scales

    def proposals_for(self, split: str, data_root=None) -> str:
        """The proposals source of ``split``: its own setting, else ``proposals``; a relative
        path is looked for under ``data_root`` first."""
        source = getattr(self, f"proposals_{split}", "") or self.proposals
        return source if source == "selective_search" else under_data_root(source, data_root)


@dataclass
class DetSplit:
    """One split ready for Fast R-CNN: the decoded images (resized only when batched, to the
    scale drawn for that batch, which keeps a real split's memory at its JPEGs' decoded size),
    proposals and boxes (continuous, in the original image's pixels), and the original sizes."""

    image_ids: list[str]
    images: list[torch.Tensor]  # uint8 [3, h, w], as decoded
    sizes: list[tuple[int, int]]  # original (height, width)
    proposals: list[torch.Tensor]
    gt_boxes: list[torch.Tensor]
    gt_labels: list[torch.Tensor]


def image_scale(height: int, width: int, scale: int, max_size: int) -> float:
    """Fast R-CNN's factor for one scale: short side to ``scale``, long side at most ``max_size``."""
    factor = scale / min(height, width)
    if round(factor * max(height, width)) > max_size:
        factor = max_size / max(height, width)
    return factor


def resized_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """(height, width) of an image of ``size`` resized by ``factor``."""
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def pyramid_levels(boxes: torch.Tensor, factors: Sequence[float], target_area: float = 224 * 224
                   ) -> torch.Tensor:
    """Per box (continuous, original frame) the index of the factor whose scaled box area is
    closest to ``target_area`` (Fast R-CNN's ``_project_im_rois``: 224 x 224, the network's
    pretraining input)."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    scaled = areas[:, None] * torch.tensor(factors, dtype=areas.dtype)[None, :] ** 2
    return (scaled - target_area).abs().argmin(1)


def load_split(devkit: VOCDevkit, split: str, gt: DetGroundTruth, cfg: DetConfig,
               ctx: RunContext) -> tuple[DetSplit, bool]:
    """Decode every image of ``split`` and attach its proposals; (split, proposals cached)."""
    ids = list(gt.image_ids)
    boxes, cached = split_proposals(
        ids, lambda i: devkit.image_path(cfg.year, i), f"voc{cfg.year}_{split}",
        Path(ctx.cache_dir) / "proposals", {"devkit": str(devkit.root.resolve()), "year": cfg.year},
        cfg.proposals_for(split, ctx.data_root), cfg.ss_mode, cfg.ss_workers, ctx.progress, ctx.log,
        file_names=[f"voc_{cfg.year}_{split}"])
    out = DetSplit(ids, [], [], [], [], [])
    for image_id, props in zip(ctx.bar(ids, desc=f"load VOC{cfg.year} {split}", leave=False), boxes):
        image = devkit.load_image(cfg.year, image_id)
        out.images.append(image)
        out.sizes.append(tuple(image.shape[-2:]))
        p = to_continuous(props)
        out.proposals.append(p[(p[:, 2] > p[:, 0]) & (p[:, 3] > p[:, 1])])
        objs = [o for o in gt.objects[image_id] if not o.difficult and o.class_name in CLASS_INDEX]
        out.gt_boxes.append(to_continuous(np.array([o.box for o in objs]).reshape(-1, 4)))
        out.gt_labels.append(torch.tensor([CLASS_INDEX[o.class_name] for o in objs], dtype=torch.int64))
    return out, cached


def training_steps(n_images: int, cfg: DetConfig) -> tuple[int, int]:
    """(minibatches per pass over the split, minibatches in all)."""
    return solver_steps(n_images, cfg.images_per_batch, cfg.iterations, cfg.epochs)


def train(model: FastRCNN, representation: Representation, data: DetSplit, cfg: DetConfig,
          ctx: RunContext) -> float:
    """Fit Fast R-CNN on ``data``; returns the mean loss of the last pass over the split."""
    device = ctx.device
    sampler = RoiSampler(cfg.rois_per_image, cfg.fg_fraction, cfg.fg_iou, cfg.bg_low)
    opt = torch.optim.SGD(model.param_groups(representation, cfg.lr, cfg.lr_pretrained,
                                             cfg.bias_lr_mult, cfg.head_bias_decay),
                          momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    per_pass, total = training_steps(len(data.images), cfg)
    sched = step_schedule(opt, total, cfg.lr_steps, cfg.step_at, cfg.stepsize)
    gen = torch.Generator().manual_seed(ctx.seed)
    scales = cfg.train_scales
    if cfg.bbox_normalization == "data":
        rois = [torch.cat([p, g]) if cfg.gt_as_proposals else p
                for p, g in zip(data.proposals, data.gt_boxes)]
        mean, std = regression_stats(rois, data.gt_boxes, data.gt_labels, len(VOC_CLASSES),
                                     sampler.coder, cfg.fg_iou, cfg.flip)
        model.target_mean.copy_(mean)
        model.target_std.copy_(std)
    net = prepare_model(model, device)
    ddp_net = distributed.wrap(net) if distributed.active() else None
    model.train()
    pass_loss, guard = float("nan"), LossGuard("voc07-det training")
    running = 0.0
    for it in ctx.bar(range(total), desc="train", leave=False):
        step = it % per_pass
        if step == 0:
            order = torch.randperm(len(data.images), generator=gen)
            flips = torch.rand(len(data.images), generator=gen) < 0.5
            picks = torch.randint(len(scales), (len(data.images),), generator=gen)
            running = 0.0
        idx = order[step * cfg.images_per_batch:(step + 1) * cfg.images_per_batch].tolist()
        # every rank samples the whole minibatch's RoIs and keeps those of its own images
        mine = range(len(idx))[distributed.share(len(idx))]
        images, sizes, rois, labels, targets = [], [], [], [], []
        n_rois, whole = 0, [0, 0]  # RoIs and padded (height, width) of the whole minibatch
        for k, i in enumerate(idx):
            factor = image_scale(*data.sizes[i], scales[int(picks[i])], cfg.max_size)
            size = resized_size(data.sizes[i], factor)
            whole = [max(whole[0], size[0]), max(whole[1], size[1])]
            image, props, gt = data.images[i], data.proposals[i] * factor, data.gt_boxes[i] * factor
            if cfg.gt_as_proposals:
                props = torch.cat([props, gt])
            if cfg.flip and flips[i]:
                w = size[1]
                props = torch.stack([w - props[:, 2], props[:, 1], w - props[:, 0], props[:, 3]], 1)
                gt = torch.stack([w - gt[:, 2], gt[:, 1], w - gt[:, 0], gt[:, 3]], 1)
                if k in mine:
                    image = image.flip(-1)
            sample = sampler(props, gt, data.gt_labels[i])
            n_rois += len(sample.labels)
            if k not in mine:
                continue
            images.append(image)
            sizes.append(size)
            rois.append(torch.cat([torch.full((len(sample.boxes), 1), float(k - mine.start)),
                                   sample.boxes], 1))
            labels.append(sample.labels)
            targets.append(sample.targets)
        rois, labels, targets = (torch.cat(t).to(device) for t in (rois, labels, targets))
        if cfg.bbox_normalization == "data":  # the model's stats are the identity otherwise
            targets = (targets - model.target_mean[labels]) / model.target_std[labels]
        if n_rois > 0:
            with autocast(device, cfg.amp):
                batch = normalised_batch(images, model.input, device, sizes)
                if ddp_net is not None:
                    batch = pad_to(batch, *whole)
                with distributed.own_randomness():
                    cls_logits, deltas = (net if ddp_net is None else ddp_net)(batch, rois)
            if ddp_net is not None:
                loss = distributed.global_mean(fast_rcnn_loss_sum(cls_logits, deltas, labels, targets),
                                               n_rois)
            else:
                cls_loss, box_loss = fast_rcnn_loss(cls_logits, deltas, labels, targets)
                loss = cls_loss + box_loss
            running += sgd_step(opt, sched, loss)
        else:
            sched.step()  # an iteration all the same, as Caffe's schedule counts it
        if step == per_pass - 1 or it == total - 1:
            pass_loss = distributed.average(float(running) / (step + 1))
            guard.check(pass_loss, it // per_pass)
    return pass_loss


@torch.no_grad()
def predict(model: FastRCNN, data: DetSplit, cfg: DetConfig, ctx: RunContext) -> dict[str, ClassDetections]:
    """Detections per class name, with VOC 1-based inclusive boxes in the original image's
    pixels; image indices point into ``data.image_ids``. Each image runs at every scale of
    ``cfg.pyramid``, each proposal is scored at its :func:`pyramid_levels` level."""
    device, coder = ctx.device, box_coder()
    net = prepare_model(model, device).eval()
    found: list[tuple[torch.Tensor, ...]] = []  # (image index, score, box, label) per image
    n, levels = len(data.images), len(cfg.pyramid)
    per_batch = max(1, cfg.test_batch // levels)
    for start in ctx.bar(range(0, n, per_batch), desc="detect", leave=False):
        idx = list(range(start, min(n, start + per_batch)))
        images, sizes, rois = [], [], []
        for k, i in enumerate(idx):
            factors = [image_scale(*data.sizes[i], s, cfg.max_size) for s in cfg.pyramid]
            level = pyramid_levels(data.proposals[i], factors)
            scale = torch.tensor(factors)[level][:, None]
            rois.append(torch.cat([(k * levels + level)[:, None].float(), data.proposals[i] * scale], 1))
            images += [data.images[i]] * levels
            sizes += [resized_size(data.sizes[i], f) for f in factors]
        with autocast(device, cfg.amp):
            batch = normalised_batch(images, model.input, device, sizes)
            cls_logits, deltas = net(batch, torch.cat(rois).to(device))
        offset = 0
        for i in idx:
            m = len(data.proposals[i])
            props = data.proposals[i].to(device)  # deltas are scale-free: decode in the original frame
            boxes, scores, labels = detect(cls_logits[offset:offset + m], deltas[offset:offset + m],
                                           props, data.sizes[i], coder, cfg.score_thresh, cfg.nms,
                                           cfg.max_per_image,
                                           target_stats=(model.target_mean, model.target_std))
            offset += m
            found.append((torch.full_like(labels, i), scores, to_voc(boxes), labels))
    image, scores, boxes, labels = (torch.cat(column).cpu() for column in zip(*found))
    return {name: ClassDetections(image[labels == c].numpy(), scores[labels == c].double().numpy(),
                                  boxes[labels == c].double().numpy())
            for c, name in enumerate(VOC_CLASSES, start=1)}


@distributed.supports(protocols=("all",))
def transfer(representation: Representation, protocol: str, ctx: RunContext) -> TransferOutput:
    """Train Fast R-CNN on the train split under ``protocol`` and detect on the test split."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"voc07-det: unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    cfg = DetConfig.from_mapping(ctx.config, protocol)
    torch.manual_seed(ctx.seed)
    devkit = VOCDevkit(locate_devkit(ctx.data_root))
    t0 = time.perf_counter()
    train_gt = det_ground_truth(devkit, cfg.year, cfg.train_split)
    test_gt = det_ground_truth(devkit, cfg.year, cfg.test_split)
    with distributed.main_first():  # the other ranks read the proposals rank 0 cached
        train_data, c1 = load_split(devkit, cfg.train_split, train_gt, cfg, ctx)
        test_data, c2 = load_split(devkit, cfg.test_split, test_gt, cfg, ctx)
    reset_peak_memory(ctx.device)
    t_data = time.perf_counter() - t0

    rescale_stats = None
    if cfg.rescale:
        representation, rescale_stats = rescaled(representation, train_data.images, cfg.rescale_images,
                                                 ctx.device)
    model = FastRCNN(representation, len(VOC_CLASSES), frozen_conv=protocol == "fc6-8")
    final_loss = train(model, representation, train_data, cfg, ctx)
    t_train = time.perf_counter() - t0 - t_data
    if not distributed.is_main():
        return None  # under several processes rank 0 alone detects and reports
    detections = predict(model, test_data, cfg, ctx)
    t_total = time.perf_counter() - t0
    n_props = [len(p) for p in test_data.proposals]
    return TransferOutput(
        predictions=Predictions("det", VOC_CLASSES, test_data.image_ids, detections=detections),
        ground_truth=test_gt, metric=cfg.metric, extra_metrics=cfg.extra_metrics,
        timing={"data": t_data, "train": t_train, "predict": t_total - t_data - t_train,
                "transfer": t_total},
        info={"split": cfg.test_split, "year": cfg.year, "final_loss": final_loss,
              "train_images": len(train_data.images),
              "test_images": len(test_data.images), "frozen": list(model.frozen),
              "epochs": cfg.epochs, "iterations": training_steps(len(train_data.images), cfg)[1],
              "scales": list(cfg.train_scales), "test_scales": list(cfg.pyramid),
              "max_size": cfg.max_size, "bbox_normalization": cfg.bbox_normalization,
              "proposals": {s: cfg.proposals_for(s) for s in (cfg.train_split, cfg.test_split)},
              "proposals_from_cache": c1 and c2,
              "proposals_per_image": float(np.mean(n_props)) if n_props else 0.0,
              "detections": sum(len(v) for v in detections.values()), "amp": cfg.amp,
              "rescale": rescale_stats,
              "peak_memory_mb": peak_memory_mb(ctx.device),
              **_distributed_info(cfg)},
    )


def _distributed_info(cfg: DetConfig) -> dict:
    """``{"distributed": ...}`` when training ran on several processes, else nothing."""
    found = distributed.describe(cfg.images_per_batch, cfg.lr)
    return {"distributed": found} if found else {}


@hookimpl
def benchharness_tasks():
    """VOC 2007 detection with Fast R-CNN under the all and fc6-8 protocols."""
    return [Task("voc07-det", PROTOCOLS, ("voc2007",), transfer,
                 "PASCAL VOC 2007 detection, Fast R-CNN on selective-search proposals")]
