"""VOC 2007 multi-label classification transfer (``voc07-cls``), after Krahenbuhl et al. 2016.

Protocols, over the representation's fixed stage names:

- ``fc8``: everything through fc7 frozen (fc6/fc7 as pretrained, random where the method has
  none); only a new linear classifier trains.
- ``fc6-8``: conv1..conv5 frozen; fc6, fc7 and the new classifier train.
- ``all``: the whole network fine-tunes.
- ``knn-<stage>`` (``knn-conv1`` .. ``knn-fc7``): nothing trains; k-nearest-neighbour votes on
  the frozen stage's output (:mod:`~benchharness.tasks.cls_knn`, ``knn_k``, ``knn_weighting``).
- ``probe-conv1`` .. ``probe-fc7``: linear SVMs on one frozen stage's pooled features, the cost
  chosen by cross-validation (:mod:`.probe`).

Training: multi-label sigmoid cross-entropy with 'difficult' labels ignored, random-scale crops
and mirroring, SGD with momentum and a step schedule (in epochs with ``lr_steps`` tenfold drops,
or in ``iterations`` with Caffe's ``stepsize``/``gamma``), optional Caffe-style gradient clipping.
Frozen protocols draw their training crops from a fixed per-image crop bank whose frozen
features are cached (``crop_bank = true``, fast), or draw fresh crops every iteration and run
the frozen stages on the fly (``crop_bank = false``, as philkr/voc-classification does). With
``frozen_dropout`` the frozen fc6/fc7 keep their dropout active in training under ``fc8``, as
Caffe runs drop6/drop7 in its TRAIN phase whatever their lr_mult. Testing: scores averaged over
a fixed bank of random crops (10 by default). Scored by the VOC AP evaluators.

``all`` trains data-parallel on several processes (``run --gpus-per-job N``): every rank draws
the whole minibatch's crops, trains on its share and backpropagates its part of the whole
minibatch's loss (:mod:`benchharness.distributed`), so the weights match one process's to
float tolerance for trunks without dropout (with dropout, each rank draws its masks from a stream of its own: equivalent in distribution only).
Rank 0 alone predicts; ``info["distributed"]`` states the world size, the global batch and lr.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..accel import (autocast, images_home, peak_memory_mb, prepare_model, reset_peak_memory,
                     to_device)
from ..backbones import STAGES
from ..data.loading.image_cache import cached_images, decode_resized
from ..data.loading.transforms import CROP_MODES, random_crop_batch
from ..data.voc.classes import VOC_CLASSES
from ..data.voc.devkit import VOCDevkit, locate_devkit
from ..hookspecs import hookimpl
from ..interfaces import ClsGroundTruth, Predictions, RunContext, Task, TransferOutput
from ..representation import Representation
from ..rescale import INIT_IMAGES, rescaled
from ..suite import config_hash
from ..training import LossGuard, sgd_step
from .settings import caffe_step_schedule, from_suite_section, step_schedule
from .crop_bank import CropBank, cached_features, compute_features, feature_cache_key
from .cls_knn import transfer_knn
from .knn import KNN_PROTOCOLS

PROBE_PROTOCOLS = tuple(f"probe-{stage}" for stage in STAGES)
TABLE_PROTOCOLS = ("fc8", "fc6-8", "all")  # Table 5.3's columns: what a suite runs by default
PROTOCOLS = TABLE_PROTOCOLS + PROBE_PROTOCOLS + KNN_PROTOCOLS
FROZEN_THROUGH = {"fc8": "fc7", "fc6-8": "conv5", "all": None}


@dataclass
class ClsConfig:
    """Settings of one classification transfer; every field can be set in the suite file."""

    year: str = "2007"
    train_split: str = "trainval"
    test_split: str = "test"
    input_size: int = 0  # 0: the backbone's input size
    store_size: int = 0  # images are kept resized to this square; 0: 1.25 x input_size
    epochs: int = 30
    iterations: int = 0  # minibatches to train; 0: ``epochs`` passes over the train split
    batch_size: int = 64
    lr: float = 0.01
    lr_pretrained: float = 0.0  # lr of pretrained stages that train; 0: same as lr
    bias_lr_mult: float = 1.0  # biases train at lr x this (Caffe's lr_mult of the bias blob)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_steps: int = 3  # lr is divided by 10 this many times, evenly over training
    stepsize: int = 0  # > 0: Caffe's "step" policy instead, lr x gamma every stepsize iterations
    gamma: float = 0.1
    clip_gradients: float = 0.0  # > 0: Caffe's clip_gradients (global L2 norm, before decay)
    fc8_bias: float = 0.0  # the new classifier's initial bias (its weights are N(0, 0.01))
    frozen_dropout: bool = False  # frozen fc6/fc7 keep dropout active in training (Caffe)
    crop_mode: str = "area"  # area: crop_scale = area fraction; caffe: source px per output px
    crop_scale: tuple[float, float] = (0.25, 1.0)
    test_crops: int = 10
    crop_bank: bool = True  # frozen protocols: training crops from a fixed bank (features cached)
    train_crops: int = 10  # size of the per-image crop bank for frozen protocols
    bank_seed: int = 0  # the crop banks depend on this, not on the transfer seed
    feature_cache: bool = True  # frozen-layer outputs computed once and cached on disk
    image_cache: bool = True  # decoded images stored once and memory-mapped by later jobs
    amp: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on the CPU; bf16; off
    rescale: bool = False  # Krahenbuhl et al.'s data-dependent rescaling before training
    rescale_images: int = INIT_IMAGES
    compile: bool = False  # torch.compile the classifier
    metric: str = "voc07-11pt"
    extra_metrics: tuple[str, ...] = ("sklearn-ap", "voc10-area")
    knn_k: int = 20  # knn-<stage>: neighbours voting per test image (no literature setting)
    knn_weighting: str = "similarity"  # knn-<stage>: votes weighted by cosine similarity, or "uniform"
    probe: dict = field(default_factory=dict)  # [tasks.voc07-cls.probe]: the probes' settings

    @classmethod
    def from_mapping(cls, config, protocol: str) -> "ClsConfig":
        """Top-level keys of the task's suite section, overridden by its ``[protocol]`` table."""
        return from_suite_section(cls, "voc07-cls", PROTOCOLS, config, protocol)


def load_split(devkit: VOCDevkit, year: str, split: str, size: int, ctx: RunContext,
               use_cache: bool = True):
    """All images of a split resized to ``size`` x ``size`` (uint8) with their labels.

    Decoded images are cached under ``<cache>/images/`` and memory-mapped by later jobs.
    """
    image_ids, labels = devkit.read_class_labels(year, split)
    cache_file = None
    if use_cache:
        key = config_hash({"devkit": str(devkit.root.resolve()), "year": year, "split": split,
                           "ids": config_hash(image_ids), "size": size})
        cache_file = Path(ctx.cache_dir) / "images" / f"voc{year}-{split}-{size}-{key}.npy"
    images, _ = cached_images(cache_file, lambda: decode_resized(
        [devkit.image_path(year, i) for i in image_ids], size, ctx.progress, f"decode VOC{year} {split}"))
    return image_ids, labels, images


class Classifier(nn.Module):
    """The trunk up to fc7 plus a new linear fc8; stages through ``frozen_through`` are fixed."""

    def __init__(self, representation: Representation, n_classes: int, frozen_through: str | None,
                 frozen_dropout: bool = False, fc8_bias: float = 0.0):
        super().__init__()
        self.trunk = copy.deepcopy(representation.network)
        self.input = representation.input
        self.fc8 = nn.Linear(self.trunk.out_dim, n_classes)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.constant_(self.fc8.bias, fc8_bias)
        self.frozen_through = frozen_through
        frozen = STAGES[:STAGES.index(frozen_through) + 1] if frozen_through else ()
        for name in frozen:
            for p in self.trunk.stage(name).parameters():
                p.requires_grad_(False)
        self.frozen = frozen
        self.frozen_dropout = frozen_dropout

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.frozen_dropout:
            for name in self.frozen:  # frozen stages behave as at test time (no dropout)
                self.trunk.stage(name).eval()
        return self

    def frozen_part(self, images: torch.Tensor) -> torch.Tensor:
        """Output of the frozen stages for float RGB crops in [0, 1]."""
        return self.trunk.forward_to(self.input.normalise(images), self.frozen_through)

    def head(self, frozen_output: torch.Tensor, after: str | None = None) -> torch.Tensor:
        """Class scores from the output of the frozen stages (the part that trains); with
        ``after`` (an earlier frozen stage, conv5 under fc8), from that stage's output: the
        frozen stages in between run without gradients, in the module's current mode."""
        if after is not None and after != self.frozen_through:
            if self.frozen_through != "fc7":
                raise ValueError(f"head: cannot start after {after!r} when frozen through "
                                 f"{self.frozen_through!r}")
            with torch.no_grad():
                frozen_output = self.trunk.forward_from(frozen_output, after)
        return self.fc8(self.trunk.forward_from(frozen_output, self.frozen_through))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.frozen_through:
            with torch.no_grad():
                h = self.frozen_part(images)
            return self.head(h)
        return self.fc8(self.trunk(self.input.normalise(images)))


def _param_groups(model: Classifier, representation: Representation, cfg: ClsConfig):
    """Weights and biases of new and of pretrained stages, each at its learning rate."""
    lr_pretrained = cfg.lr_pretrained or cfg.lr
    groups: dict[tuple[float, bool], list] = {}
    owners = [(model.fc8, cfg.lr)] + [
        (model.trunk.stage(name), lr_pretrained if name in representation.learned_stages else cfg.lr)
        for name in STAGES]
    for module, lr in owners:
        for pname, p in module.named_parameters():
            if p.requires_grad:
                groups.setdefault((lr, pname.endswith("bias")), []).append(p)
    return [{"params": params, "lr": lr * (cfg.bias_lr_mult if is_bias else 1.0)}
            for (lr, is_bias), params in groups.items()]


SHARED_LAYER = "conv5"
"""Frozen features are cached at conv5's output, which fc6-8 trains on directly; fc8 runs the
cached features through the (frozen) fc6 and fc7, a small fraction of the work, so the two
protocols share one feature computation per representation."""


def frozen_features(model: Classifier, representation, images, bank: CropBank, split: str,
                    cfg: ClsConfig, ctx: RunContext,
                    through_frozen: bool = True) -> tuple[torch.Tensor, bool]:
    """The frozen stages' output for every bank crop of a split (conv5's output only, when not
    ``through_frozen``); the conv5 part comes from the disk cache when there
    (``(features, came_from_cache)``)."""
    cache_file = None
    key = cfg.feature_cache and feature_cache_key(
        representation, device=ctx.device, amp=cfg.amp, data_root=ctx.data_root,
        settings={"rescale": cfg.rescale, "rescale_images": cfg.rescale_images, "layer": SHARED_LAYER,
                  "year": cfg.year, "split": split, "store": cfg.store_size, "input": cfg.input_size,
                  "k": bank.k, "scale": cfg.crop_scale, "seed": cfg.bank_seed}
                 | ({"crop_mode": cfg.crop_mode} if cfg.crop_mode != "area" else {}))
    if key:
        cache_file = Path(ctx.cache_dir) / "features" / f"{SHARED_LAYER}-{key}.safetensors"
    prepare_model(model, ctx.device).eval()

    def conv5(x):
        with autocast(ctx.device, cfg.amp):
            return model.trunk.forward_to(model.input.normalise(x), SHARED_LAYER)

    feats, cached = cached_features(cache_file, lambda: compute_features(
        images, bank, cfg.input_size, conv5, ctx.device, progress=ctx.progress))
    if model.frozen_through == SHARED_LAYER or not through_frozen:
        return feats, cached
    return _continue_frozen(model, feats, cfg, ctx), cached


@torch.no_grad()
def _continue_frozen(model: Classifier, conv5: torch.Tensor, cfg: ClsConfig, ctx: RunContext,
                     batch_size: int = 4096) -> torch.Tensor:
    """fc6 and fc7 (frozen under ``fc8``) applied to cached conv5 features [N, K, ...]."""
    n, k = conv5.shape[:2]
    flat = conv5.flatten(0, 1)
    out = []
    for start in range(0, len(flat), batch_size):
        h = to_device(flat[start:start + batch_size], ctx.device)
        with autocast(ctx.device, cfg.amp):
            h = model.trunk.forward_from(h, SHARED_LAYER)  # through fc7, where fc8 starts
        out.append(h.float().cpu())
    return torch.cat(out).view(n, k, -1)


def lr_schedule(optimizer: torch.optim.Optimizer, cfg: ClsConfig, total_steps: int):
    """Caffe's step policy when ``cfg.stepsize`` is set, else ``lr_steps`` tenfold drops evenly
    spaced over ``total_steps``."""
    if cfg.stepsize:
        return caffe_step_schedule(optimizer, cfg.stepsize, cfg.gamma)
    return step_schedule(optimizer, total_steps, cfg.lr_steps)


def train(model: Classifier, representation, images, labels, cfg: ClsConfig, ctx: RunContext,
          bank: CropBank | None = None, features: torch.Tensor | None = None,
          features_after: str | None = None) -> tuple[float, int]:
    """Fit the classifier with masked sigmoid cross-entropy; returns the last epoch's mean loss
    and the number of iterations run.

    Frozen protocols with ``cfg.crop_bank`` draw each crop from ``bank`` and read the frozen
    output from ``features`` when given (the output of stage ``features_after``, by default
    the last frozen one), computing it on the fly otherwise. Without the bank, and under
    ``all``, every iteration draws fresh random crops.
    """
    device = ctx.device
    targets = torch.as_tensor(labels == 1, dtype=torch.float32)
    weights = torch.as_tensor(labels != 0, dtype=torch.float32)  # difficult -> ignored
    opt = torch.optim.SGD(_param_groups(model, representation, cfg), momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(images) // cfg.batch_size)
    total = cfg.iterations or cfg.epochs * steps_per_epoch
    sched = lr_schedule(opt, cfg, total)
    gen = torch.Generator().manual_seed(ctx.seed)
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    targets, weights = to_device(targets, device), to_device(weights, device)
    net = prepare_model(model, device, cfg.compile)
    ddp_net = distributed.wrap(net) if distributed.active() and not model.frozen_through else None
    model.train()

    def fresh_crops(idx):
        return random_crop_batch(images[idx.to(images.device)], cfg.input_size, gen,
                                 scale=cfg.crop_scale, mode=cfg.crop_mode)

    epoch_loss, guard, done = float("nan"), LossGuard("voc07-cls training"), 0
    for epoch in ctx.bar(range(math.ceil(total / steps_per_epoch)), desc="train", leave=False):
        order = torch.randperm(len(images), generator=gen)
        running, steps = 0.0, min(steps_per_epoch, total - done)
        for step in range(steps):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            with autocast(device, cfg.amp):
                if model.frozen_through:
                    if not cfg.crop_bank:
                        with torch.no_grad():
                            h = model.frozen_part(fresh_crops(idx))
                    else:
                        which = torch.randint(bank.k, (len(idx),), generator=gen)
                        if features is not None:
                            h = to_device(features[idx, which], device)
                        else:
                            with torch.no_grad():
                                h = model.frozen_part(bank.crops(images, idx, which, cfg.input_size))
                    logits = model.head(h, features_after if features is not None else None)
                elif ddp_net is not None:  # the whole minibatch's crops; this rank's share
                    crops = distributed.shard(fresh_crops(idx))
                    with distributed.own_randomness():
                        logits = ddp_net(crops)
                else:
                    logits = net(fresh_crops(idx))
            # as Caffe's SigmoidCrossEntropyLoss: summed over classes, averaged over images
            if ddp_net is not None:
                idx_d = distributed.shard(idx).to(device)
                part = (loss_fn(logits.float(), targets[idx_d]) * weights[idx_d]).sum()
                loss = distributed.global_mean(part, len(idx))
            else:
                idx_d = idx.to(device)
                loss = (loss_fn(logits.float(), targets[idx_d]) * weights[idx_d]).sum() / len(idx)
            running += sgd_step(opt, sched, loss, cfg.clip_gradients)
        done += steps
        epoch_loss = distributed.average(float(running) / steps)
        guard.check(epoch_loss, epoch)
    return epoch_loss, done


@torch.no_grad()
def predict(model: Classifier, images, bank: CropBank, cfg: ClsConfig, ctx: RunContext,
            features: torch.Tensor | None = None) -> np.ndarray:
    """Class scores averaged over the test bank's crops (``cfg.test_crops`` per image)."""
    net = prepare_model(model, ctx.device, cfg.compile).eval()
    scores = torch.zeros(len(images), model.fc8.out_features)
    for start in range(0, len(images), 256):
        idx = torch.arange(start, min(start + 256, len(images)))
        for j in range(bank.k):
            with autocast(ctx.device, cfg.amp):
                if features is not None:
                    logits = model.head(to_device(features[idx, j], ctx.device))
                else:
                    logits = net(bank.crops(images, idx, torch.full_like(idx, j), cfg.input_size))
            scores[idx] += logits.float().cpu()
    return (scores / bank.k).numpy()


@distributed.supports(protocols=("all",))
def transfer(representation: Representation, protocol: str, ctx: RunContext) -> TransferOutput:
    """Train on the train split under ``protocol`` and predict the test split."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"voc07-cls: unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    if protocol in PROBE_PROTOCOLS:
        from . import probe  # imported here: the probe reads this module's settings and splits

        return probe.transfer(representation, protocol, ctx)
    cfg = ClsConfig.from_mapping(ctx.config, protocol)
    cfg.input_size = cfg.input_size or representation.network.spec.input_size
    cfg.store_size = cfg.store_size or round(cfg.input_size * 1.25)
    if cfg.crop_mode not in CROP_MODES:
        raise ValueError(f"voc07-cls: unknown crop_mode {cfg.crop_mode!r}; choose from {CROP_MODES}")
    if cfg.iterations < 0 or cfg.stepsize < 0 or cfg.clip_gradients < 0:
        raise ValueError("voc07-cls: iterations, stepsize and clip_gradients must not be negative "
                         f"(got {cfg.iterations}, {cfg.stepsize}, {cfg.clip_gradients})")
    if protocol in KNN_PROTOCOLS:  # nothing trains: features, neighbours, votes
        return transfer_knn(representation, protocol, cfg, ctx, load_split)
    torch.manual_seed(ctx.seed)
    devkit = VOCDevkit(locate_devkit(ctx.data_root))
    t0 = time.perf_counter()
    with distributed.main_first():  # the other ranks read the images rank 0 cached
        _, train_labels, train_images = load_split(devkit, cfg.year, cfg.train_split, cfg.store_size,
                                                   ctx, cfg.image_cache)
        test_ids, test_labels, test_images = load_split(devkit, cfg.year, cfg.test_split,
                                                        cfg.store_size, ctx, cfg.image_cache)
    train_images = images_home(train_images, ctx.device)
    test_images = images_home(test_images, ctx.device)
    reset_peak_memory(ctx.device)
    t_data = time.perf_counter() - t0

    rescale_stats = None
    network_source = representation
    if cfg.rescale:
        network_source, rescale_stats = rescaled(representation, train_images, cfg.rescale_images, ctx.device)
    model = Classifier(network_source, len(VOC_CLASSES), FROZEN_THROUGH[protocol], cfg.frozen_dropout,
                       cfg.fc8_bias)
    banks = {"mode": cfg.crop_mode, "out_size": cfg.input_size}
    train_bank = CropBank.make(len(train_images), cfg.train_crops, cfg.store_size, cfg.crop_scale,
                               seed=cfg.bank_seed, **banks) if cfg.crop_bank else None
    test_bank = CropBank.make(len(test_images), cfg.test_crops, cfg.store_size, cfg.crop_scale,
                              seed=cfg.bank_seed + 1, **banks)
    train_feats = test_feats = train_after = None
    feats_cached = False
    if model.frozen_through and cfg.feature_cache:
        # dropout under fc8 needs fc6/fc7 run per step, so those features stop at conv5
        dropout_between = cfg.frozen_dropout and model.frozen_through != SHARED_LAYER
        feats_cached = True
        if cfg.crop_bank:
            train_feats, feats_cached = frozen_features(model, representation, train_images, train_bank,
                                                        cfg.train_split, cfg, ctx, not dropout_between)
            train_after = SHARED_LAYER if dropout_between else None
        test_feats, c2 = frozen_features(model, representation, test_images, test_bank,
                                         cfg.test_split, cfg, ctx)
        feats_cached = feats_cached and c2
    t_feats = time.perf_counter() - t0 - t_data
    final_loss, iterations = train(model, representation, train_images, train_labels, cfg, ctx,
                                   train_bank, train_feats, train_after)
    t_train = time.perf_counter() - t0 - t_data - t_feats
    if not distributed.is_main():
        return None  # under several processes rank 0 alone predicts and reports
    scores = predict(model, test_images, test_bank, cfg, ctx, test_feats)
    t_total = time.perf_counter() - t0
    return TransferOutput(
        predictions=Predictions("cls", VOC_CLASSES, test_ids, scores=scores),
        ground_truth=ClsGroundTruth(VOC_CLASSES, test_ids, test_labels),
        metric=cfg.metric, extra_metrics=cfg.extra_metrics,
        timing={"data": t_data, "features": t_feats, "train": t_train,
                "predict": t_total - t_data - t_feats - t_train, "transfer": t_total},
        info={"split": cfg.test_split, "year": cfg.year, "final_loss": final_loss, "train_images": len(train_labels),
              "test_images": len(test_ids), "frozen": list(model.frozen),
              "epochs": cfg.epochs, "iterations": iterations, "input_size": cfg.input_size,
              "crop_bank": cfg.crop_bank, "crop_mode": cfg.crop_mode,
              "frozen_dropout": cfg.frozen_dropout and "fc6" in model.frozen,
              "feature_cache": cfg.feature_cache and bool(model.frozen_through),
              "features_from_cache": feats_cached, "amp": cfg.amp, "rescale": rescale_stats,
              "peak_memory_mb": peak_memory_mb(ctx.device),
              **_distributed_info(cfg)},
    )


def _distributed_info(cfg: ClsConfig) -> dict:
    """``{"distributed": ...}`` when training ran on several processes, else nothing."""
    found = distributed.describe(cfg.batch_size, cfg.lr)
    return {"distributed": found} if found else {}


@hookimpl
def benchharness_tasks():
    """VOC 2007 classification under the fc8, fc6-8 and all protocols, the linear probes and the
    knn-<stage> protocols."""
    return [Task("voc07-cls", PROTOCOLS, ("voc2007",), transfer,
                 "PASCAL VOC 2007 multi-label classification (Krahenbuhl et al. 2016 protocols; "
                 "linear SVM probes and k-NN of each stage)",
                 default_protocols=TABLE_PROTOCOLS)]
