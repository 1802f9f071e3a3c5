"""VOC 2007 object detection transfer (``voc07-det``) with Fast R-CNN (Girshick 2015).

Protocols, over the representation's fixed stage names:

- ``all``: everything fine-tunes (the published column);
- ``fc6-8``: conv1..conv5 frozen; fc6, fc7 and the new heads train.

Training follows Fast R-CNN: single scale (the short side resized to ``scale`` pixels, the long
side at most ``max_size``), horizontal flips, minibatches of ``images_per_batch`` images x
``rois_per_image`` RoIs of which 25% foreground (IoU >= 0.5 with a ground-truth box, the
ground-truth boxes themselves included) and the rest background (IoU in [0.1, 0.5)); softmax +
smooth-L1 multi-task loss; SGD with momentum and step decay. 'difficult' objects are left out
of training, as in Fast R-CNN. Testing: every proposal scored, boxes regressed per class,
per-class NMS at IoU 0.3, at most 100 detections per image. Proposals come from selective
search (cached on disk, see :mod:`.proposals`) or from a user file (``proposals = PATH``).
Scored with ``voc07-11pt`` (``coco-ap50`` in ``per_metric``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..accel import autocast, peak_memory_mb, prepare_model, reset_peak_memory
from ..data.classes import VOC_CLASSES
from ..data.voc import VOCDevkit, locate_devkit
from ..evaluators.ground_truth import det_ground_truth
from ..hookspecs import hookimpl
from ..interfaces import ClassDetections, DetGroundTruth, Predictions, RunContext, Task, TransferOutput
from ..representation import Representation
from ..rescale import INIT_IMAGES, rescaled
from ..training import LossGuard, sgd_step
from .settings import from_suite_section, step_schedule
from .batching import normalised_batch
from .fast_rcnn import FastRCNN, RoiSampler, box_coder, detect, fast_rcnn_loss
from .proposals import split_proposals, to_continuous, to_voc

PROTOCOLS = ("all", "fc6-8")
CLASS_INDEX = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}  # 0 is background


@dataclass
class DetConfig:
    """Settings of one detection transfer; every field can be set in the suite file."""

    year: str = "2007"
    train_split: str = "trainval"
    test_split: str = "test"
    scale: int = 600  # short side of the network's input, in pixels
    max_size: int = 1000  # cap on the long side
    proposals: str = "selective_search"  # or a .mat / .npz file (or a folder of <split>.mat|npz)
    ss_mode: str = "fast"
    ss_workers: int = 2
    epochs: int = 16
    images_per_batch: int = 2
    rois_per_image: int = 64
    fg_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_low: float = 0.1
    gt_as_proposals: bool = True  # the ground-truth boxes join the training proposals
    flip: bool = True
    lr: float = 0.001
    lr_pretrained: float = 0.0  # lr of pretrained stages that train; 0: same as lr
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: int = 1  # lr / 10 this many times, evenly spaced (Fast R-CNN: once, at 80%)
    step_at: float = 0.8  # with one step: when, as a fraction of training
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
        return from_suite_section(cls, "voc07-det", PROTOCOLS, config, protocol)


@dataclass
class DetSplit:
    """One split ready for Fast R-CNN: the decoded images (resized to ``resized`` only when
    batched, which keeps a real split's memory at its JPEGs' decoded size), per-image scale,
    proposals and boxes (continuous, in the resized frame), and the original sizes."""

    image_ids: list[str]
    images: list[torch.Tensor]  # uint8 [3, h, w], as decoded
    scales: list[float]
    sizes: list[tuple[int, int]]  # original (height, width)
    resized: list[tuple[int, int]]  # (height, width) the network sees
    proposals: list[torch.Tensor]
    gt_boxes: list[torch.Tensor]
    gt_labels: list[torch.Tensor]


def image_scale(height: int, width: int, scale: int, max_size: int) -> float:
    """Fast R-CNN's single-scale factor: short side to ``scale``, long side at most ``max_size``."""
    factor = scale / min(height, width)
    if round(factor * max(height, width)) > max_size:
        factor = max_size / max(height, width)
    return factor


def load_split(devkit: VOCDevkit, split: str, gt: DetGroundTruth, cfg: DetConfig,
               ctx: RunContext) -> tuple[DetSplit, bool]:
    """Decode, resize and attach proposals to every image of ``split``; (split, proposals cached)."""
    ids = list(gt.image_ids)
    boxes, cached = split_proposals(
        ids, lambda i: devkit.image_path(cfg.year, i), f"voc{cfg.year}_{split}",
        Path(ctx.cache_dir) / "proposals", {"devkit": str(devkit.root.resolve()), "year": cfg.year},
        cfg.proposals, cfg.ss_mode, cfg.ss_workers, ctx.progress, ctx.log)
    out = DetSplit(ids, [], [], [], [], [], [], [])
    for image_id, props in zip(ctx.bar(ids, desc=f"load VOC{cfg.year} {split}", leave=False), boxes):
        image = devkit.load_image(cfg.year, image_id)
        h, w = image.shape[-2:]
        s = image_scale(h, w, cfg.scale, cfg.max_size)
        out.images.append(image)
        out.scales.append(s)
        out.sizes.append((h, w))
        out.resized.append((max(1, round(h * s)), max(1, round(w * s))))
        p = to_continuous(props)
        p = p[(p[:, 2] > p[:, 0]) & (p[:, 3] > p[:, 1])]
        out.proposals.append(p * s)
        objs = [o for o in gt.objects[image_id] if not o.difficult and o.class_name in CLASS_INDEX]
        out.gt_boxes.append(to_continuous(np.array([o.box for o in objs]).reshape(-1, 4)) * s)
        out.gt_labels.append(torch.tensor([CLASS_INDEX[o.class_name] for o in objs], dtype=torch.int64))
    return out, cached


def train(model: FastRCNN, representation: Representation, data: DetSplit, cfg: DetConfig,
          ctx: RunContext) -> float:
    """Fit Fast R-CNN on ``data``; returns the last epoch's mean loss."""
    device = ctx.device
    sampler = RoiSampler(cfg.rois_per_image, cfg.fg_fraction, cfg.fg_iou, cfg.bg_low)
    opt = torch.optim.SGD(model.param_groups(representation, cfg.lr, cfg.lr_pretrained),
                          momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps = max(1, len(data.images) // cfg.images_per_batch)
    sched = step_schedule(opt, cfg.epochs * steps, cfg.lr_steps, cfg.step_at)
    gen = torch.Generator().manual_seed(ctx.seed)
    net = prepare_model(model, device)
    model.train()
    epoch_loss, guard = float("nan"), LossGuard("voc07-det training")
    for epoch in ctx.bar(range(cfg.epochs), desc="train", leave=False):
        order = torch.randperm(len(data.images), generator=gen)
        flips = torch.rand(len(data.images), generator=gen) < 0.5
        running = 0.0
        for step in range(steps):
            idx = order[step * cfg.images_per_batch:(step + 1) * cfg.images_per_batch].tolist()
            images, rois, labels, targets = [], [], [], []
            for k, i in enumerate(idx):
                image, props, gt = data.images[i], data.proposals[i], data.gt_boxes[i]
                if cfg.gt_as_proposals:
                    props = torch.cat([props, gt])
                if cfg.flip and flips[i]:
                    w = data.resized[i][1]
                    image = image.flip(-1)
                    props = torch.stack([w - props[:, 2], props[:, 1], w - props[:, 0], props[:, 3]], 1)
                    gt = torch.stack([w - gt[:, 2], gt[:, 1], w - gt[:, 0], gt[:, 3]], 1)
                sample = sampler(props, gt, data.gt_labels[i])
                images.append(image)
                rois.append(torch.cat([torch.full((len(sample.boxes), 1), float(k)), sample.boxes], 1))
                labels.append(sample.labels)
                targets.append(sample.targets)
            rois, labels, targets = (torch.cat(t).to(device) for t in (rois, labels, targets))
            if len(labels) == 0:
                continue
            with autocast(device, cfg.amp):
                batch = normalised_batch(images, model.input, device, [data.resized[i] for i in idx])
                cls_logits, deltas = net(batch, rois)
            cls_loss, box_loss = fast_rcnn_loss(cls_logits, deltas, labels, targets)
            loss = cls_loss + box_loss
            running += sgd_step(opt, sched, loss)
        epoch_loss = float(running) / steps
        guard.check(epoch_loss, epoch)
    return epoch_loss


@torch.no_grad()
def predict(model: FastRCNN, data: DetSplit, cfg: DetConfig, ctx: RunContext) -> dict[str, ClassDetections]:
    """Detections per class name, with VOC 1-based inclusive boxes in the original image's
    pixels; image indices point into ``data.image_ids``."""
    device, coder = ctx.device, box_coder()
    net = prepare_model(model, device).eval()
    found: list[tuple[torch.Tensor, ...]] = []  # (image index, score, box, label) per image
    n = len(data.images)
    for start in ctx.bar(range(0, n, cfg.test_batch), desc="detect", leave=False):
        idx = list(range(start, min(n, start + cfg.test_batch)))
        rois = torch.cat([torch.cat([torch.full((len(data.proposals[i]), 1), float(k)),
                                     data.proposals[i]], 1) for k, i in enumerate(idx)]).to(device)
        with autocast(device, cfg.amp):
            batch = normalised_batch([data.images[i] for i in idx], model.input, device,
                                     [data.resized[i] for i in idx])
            cls_logits, deltas = net(batch, rois)
        offset = 0
        for i in idx:
            m = len(data.proposals[i])
            props = data.proposals[i].to(device) / data.scales[i]  # decode in the original frame
            boxes, scores, labels = detect(cls_logits[offset:offset + m], deltas[offset:offset + m],
                                           props, data.sizes[i], coder, cfg.score_thresh, cfg.nms,
                                           cfg.max_per_image)
            offset += m
            found.append((torch.full_like(labels, i), scores, to_voc(boxes), labels))
    image, scores, boxes, labels = (torch.cat(column).cpu() for column in zip(*found))
    return {name: ClassDetections(image[labels == c].numpy(), scores[labels == c].double().numpy(),
                                  boxes[labels == c].double().numpy())
            for c, name in enumerate(VOC_CLASSES, start=1)}


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
              "epochs": cfg.epochs, "scale": cfg.scale, "proposals": cfg.proposals,
              "proposals_from_cache": c1 and c2,
              "proposals_per_image": float(np.mean(n_props)) if n_props else 0.0,
              "detections": sum(len(v) for v in detections.values()), "amp": cfg.amp, "rescale": rescale_stats,
              "peak_memory_mb": peak_memory_mb(ctx.device)},
    )


@hookimpl
def benchharness_tasks():
    """VOC 2007 detection with Fast R-CNN under the all and fc6-8 protocols."""
    return [Task("voc07-det", PROTOCOLS, ("voc2007",), transfer,
                 "PASCAL VOC 2007 detection, Fast R-CNN on selective-search proposals")]
