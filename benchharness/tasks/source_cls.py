"""``source-cls``: classification of the source set with the lower layers frozen (Table 5.2).

The protocol of Noroozi & Favaro 2016 that Donahue's Table 5.2 (and the BiGAN paper's Table 2)
use: under protocol ``convN`` the representation's conv1..convN are kept and frozen, every stage
above is re-initialised as a random trunk is (the backbone's own Gaussian init) and trained
with a fresh linear classifier over the source classes, fully supervised, on the source set's
train folder; the number is top-1 accuracy (%) on its val folder (``top5`` in ``per_metric``).
How much of the accuracy survives at conv5 says how general the representation's frozen
layers are (on ImageNet a random trunk collapses there: 12.0 against 48.5 at conv1).

The source set is the data root's labelled set (``<root>/source/train`` and ``val`` beside it:
the synthetic world's ImageNet stand-in), or ImageNet: ``train_dir`` = ILSVRC2012's
``train/<wnid>/*.JPEG`` and ``val_dir`` a val folder with the same per-class subfolders.
``data = "auto"`` streams a set that large from disk (:class:`~benchharness.data.loading.labelled.
LabelledImages`, as ``supervised`` pretraining does); both folders are read in
:class:`torchvision.datasets.ImageFolder`'s order.

Training: softmax cross-entropy, random crops (``crop_mode``/``crop_scale``) and mirroring of
the stored squares, SGD with momentum and weight decay, a step schedule (``lr_steps`` tenfold
drops over the run, or Caffe's ``stepsize``/``gamma``), in ``epochs`` or ``iterations``. Frozen
stages run in eval mode without gradients. Testing: the centre ``input_size`` crop of each
stored val image (Caffe's test crop).

``knn-<stage>`` protocols (:mod:`~benchharness.tasks.knn`) train nothing: each val image takes
the class vote of its ``knn_k`` cosine-nearest train images on the frozen stage (``knn_k = 1``:
the 1-NN of Table 5.1), features computed once per image and cached.
"""

from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..accel import autocast, peak_memory_mb, prepare_model, reset_peak_memory
from ..backbones import CONV_STAGES, STAGES
from ..data.datasets import locate_source
from ..data.loading.folders import list_image_folder
from ..data.loading.image_cache import decode_resized
from ..data.loading.labelled import LabelledImages
from ..data.loading.transforms import CROP_MODES, center_crop_batch, random_crop_batch
from ..hookspecs import hookimpl
from ..interfaces import (DataError, LabelGroundTruth, Predictions, RunContext, Task,
                          TransferOutput)
from ..representation import Representation
from ..rescale import INIT_IMAGES, rescaled
from ..suite import config_hash
from ..training import LossGuard, sgd_step
from .classification import Classifier
from .crop_bank import feature_cache_key
from .knn import KNN_PROTOCOLS, check_knn_settings, knn_scores, knn_stage
from .settings import from_suite_section, solver_steps, step_schedule, under_data_root
from .stage_features import centre_fraction, stage_features

TASK = "source-cls"
PROTOCOLS = CONV_STAGES + KNN_PROTOCOLS


@dataclass
class SourceClsConfig:
    """Settings of one ``source-cls`` job; every field can be set in ``[tasks.source-cls]``."""

    train_dir: str = ""  # "": the data root's labelled source set, <root>/source/train
    val_dir: str = ""  # "": the folder "val" beside train_dir
    input_size: int = 0  # 0: the backbone's input size
    store_size: int = 0  # images are kept resized to this square; 0: 1.125 x input_size
    epochs: int = 10
    iterations: int = 0  # minibatches to train; 0: ``epochs`` passes over the train folder
    batch_size: int = 64
    lr: float = 0.01
    bias_lr_mult: float = 1.0  # biases train at lr x this (Caffe's lr_mult of the bias blob)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: int = 2  # lr divided by 10 this many times, evenly over training
    stepsize: int = 0  # > 0: Caffe's "step" policy instead, lr x gamma every stepsize iterations
    gamma: float = 0.1
    crop_mode: str = "area"  # area: crop_scale = area fraction; caffe: source px per output px
    crop_scale: tuple[float, float] = (0.35, 1.0)
    data: str = "auto"  # auto | memory | stream (data/streaming.py)
    data_workers: int = 2  # DataLoader workers when streaming
    eval_batch: int = 256
    amp: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on the CPU; bf16; off
    compile: bool = False
    rescale: bool = False  # Krahenbuhl et al.'s rescaling of the representation first
    rescale_images: int = INIT_IMAGES
    knn_k: int = 1  # knn-<stage>: neighbours voting per val image (1: Table 5.1's 1-NN)
    knn_weighting: str = "similarity"  # or "uniform"
    feature_cache: bool = True  # knn-<stage>: features stored under <cache>/features/
    metric: str = "top1"
    extra_metrics: tuple[str, ...] = ("top5",)

    @classmethod
    def from_mapping(cls, config, protocol: str) -> "SourceClsConfig":
        """Top-level keys of the task's suite section, overridden by its ``[protocol]`` table."""
        return from_suite_section(cls, TASK, PROTOCOLS, config, protocol)


def source_folders(cfg: SourceClsConfig, data_root: Path) -> tuple[Path, Path]:
    """The train and val folders: ``train_dir`` / ``val_dir`` (relative ones under the data
    root first), by default the data root's source set and the ``val`` beside it."""
    train = Path(under_data_root(cfg.train_dir, data_root)) if cfg.train_dir else locate_source(data_root)
    val = Path(under_data_root(cfg.val_dir, data_root)) if cfg.val_dir else train.parent / "val"
    for path, key in ((train, "train_dir"), (val, "val_dir")):
        if not path.is_dir():
            raise DataError(path, f"{TASK}: no <class>/<image> folder here (set `{key}` in "
                                  f"[tasks.{TASK}]: ImageNet's ILSVRC2012 {key[:-4]} folder)")
    return train, val


def image_ids(paths: list[Path], root: Path) -> list[str]:
    """Ids for exported predictions: the file stems (ImageNet's ``ILSVRC2012_val_00000001``),
    or the paths under ``root`` where stems repeat; whitespace and slashes become ``_``."""
    stems = [p.stem for p in paths]
    if len(set(stems)) < len(stems):
        stems = [str(p.relative_to(root).with_suffix("")) for p in paths]
    return [re.sub(r"[\s/\\]+", "_", s) for s in stems]


def val_targets(train: LabelledImages, val: LabelledImages, val_dir: Path) -> np.ndarray:
    """The val images' classes as indices into the train folder's classes; a val class the
    train folder lacks is a DataError naming it."""
    index = {name: i for i, name in enumerate(train.classes)}
    unknown = [name for name in val.classes if name not in index]
    if unknown:
        raise DataError(val_dir, f"{TASK}: classes {unknown[:5]} are not in the train folder "
                                 f"{train.root} ({len(unknown)} in all)")
    remap = np.array([index[name] for name in val.classes], dtype=np.int64)
    return remap[val.targets.numpy()]


def frozen_classifier(representation: Representation, n_classes: int, last_frozen: str,
                      seed: int) -> Classifier:
    """The trunk with conv1..``last_frozen`` as the representation has them and frozen, every
    stage above re-initialised from ``seed`` with the backbone's random init, and a new linear
    classifier (N(0, 0.01) weights, zero bias)."""
    torch.manual_seed(seed)
    model = Classifier(representation, n_classes, last_frozen)
    above = STAGES[STAGES.index(last_frozen) + 1:]
    model.trunk.reset_parameters(above, generator=torch.Generator().manual_seed(seed))
    return model


def _param_groups(model: Classifier, cfg: SourceClsConfig) -> list[dict]:
    weights, biases = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (biases if name.endswith("bias") else weights).append(p)
    return [{"params": weights, "lr": cfg.lr}, {"params": biases, "lr": cfg.lr * cfg.bias_lr_mult}]


def train(model: Classifier, data: LabelledImages, cfg: SourceClsConfig, ctx: RunContext) -> tuple[float, int]:
    """Fit the stages above the frozen ones and the classifier with softmax cross-entropy;
    returns the last epoch's mean loss and the number of iterations run."""
    steps_per_epoch, total = solver_steps(len(data), cfg.batch_size, cfg.iterations, cfg.epochs)
    opt = torch.optim.SGD(_param_groups(model, cfg), momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = step_schedule(opt, total, cfg.lr_steps, stepsize=cfg.stepsize, gamma=cfg.gamma)
    gen = torch.Generator().manual_seed(ctx.seed)
    net = prepare_model(model, ctx.device, cfg.compile)
    model.train()  # the frozen stages stay in eval mode (Classifier.train)
    batches = data.epoch_batches(cfg.batch_size, steps_per_epoch, gen)
    guard, done, epoch_loss = LossGuard(f"{TASK} training"), 0, float("nan")
    for epoch in ctx.bar(range(-(-total // steps_per_epoch)), desc="train", leave=False):
        steps, running = min(steps_per_epoch, total - done), 0.0
        for step, (images, targets) in enumerate(batches):
            if step == steps:  # the run ends inside this epoch
                break
            crops = random_crop_batch(images, cfg.input_size, gen, scale=cfg.crop_scale, mode=cfg.crop_mode)
            with autocast(ctx.device, cfg.amp):
                logits = net(crops.to(ctx.device))
            loss = nn.functional.cross_entropy(logits.float(), targets.to(ctx.device))
            running += sgd_step(opt, sched, loss)
        done += steps
        epoch_loss = float(running) / steps
        guard.check(epoch_loss, epoch)
    return epoch_loss, done


@torch.no_grad()
def predict(model: Classifier, data: LabelledImages, cfg: SourceClsConfig, ctx: RunContext) -> np.ndarray:
    """Class scores (logits) [N, C] of every image of ``data``, in order, on its centre crop."""
    net = prepare_model(model, ctx.device, cfg.compile).eval()
    out = []
    for images, _ in data.in_order(cfg.eval_batch):
        crops = center_crop_batch(images, cfg.input_size, centre_fraction(cfg.input_size, images.shape[-1]))
        with autocast(ctx.device, cfg.amp):
            out.append(net(crops.to(ctx.device)).float().cpu())
    return torch.cat(out).numpy()


def knn_predict(representation: Representation, stage: str, train: LabelledImages,
                val: LabelledImages, cfg: SourceClsConfig, ctx: RunContext) -> tuple[np.ndarray, int]:
    """Class scores [N, C] of the val images by the votes of their ``knn_k`` nearest train
    images on ``stage`` (features cached when ``cfg.feature_cache``), and the feature width."""
    rows = []
    for data in (train, val):
        cache_file = None
        key = cfg.feature_cache and feature_cache_key(
            representation, device=ctx.device, amp=cfg.amp, data_root=ctx.data_root,
            settings={"knn": stage, "folder": str(data.root.resolve()), "images": len(data),
                      "classes": config_hash(list(data.classes)), "store": cfg.store_size,
                      "input": cfg.input_size, "rescale": cfg.rescale,
                      "rescale_images": cfg.rescale_images})
        if key:
            cache_file = Path(ctx.cache_dir) / "features" / f"{TASK}-knn-{stage}-{key}.npy"
        rows.append(stage_features(copy.deepcopy(representation.network), representation.input,
                                   data.in_order(cfg.eval_batch), len(data), stage, cfg.input_size,
                                   ctx.device, cfg.amp, cache_file, ctx.progress))
    scores = knn_scores(rows[0], train.targets.numpy(), rows[1], len(train.classes), cfg.knn_k,
                        cfg.knn_weighting, ctx.device)
    return scores, int(rows[0].shape[1])


def _check(cfg: SourceClsConfig) -> None:
    if cfg.crop_mode not in CROP_MODES:
        raise ValueError(f"{TASK}: unknown crop_mode {cfg.crop_mode!r}; choose from {CROP_MODES}")
    if min(cfg.iterations, cfg.stepsize, cfg.lr_steps) < 0 or cfg.batch_size < 1 or cfg.eval_batch < 1:
        raise ValueError(f"{TASK}: iterations, stepsize and lr_steps must not be negative and "
                         f"batch_size, eval_batch must be at least 1 (got {cfg.iterations}, "
                         f"{cfg.stepsize}, {cfg.lr_steps}, {cfg.batch_size}, {cfg.eval_batch})")
    check_knn_settings(TASK, cfg.knn_k, cfg.knn_weighting)


def _rescale_sample(train_dir: Path, cfg: SourceClsConfig) -> torch.Tensor:
    """``rescale_images`` train images drawn with a fixed seed, decoded at the store size."""
    paths, _, _ = list_image_folder(train_dir)
    pick = torch.randperm(len(paths), generator=torch.Generator().manual_seed(0))[:cfg.rescale_images]
    return decode_resized([paths[i] for i in pick.tolist()], cfg.store_size)


def transfer(representation: Representation, protocol: str, ctx: RunContext) -> TransferOutput:
    """Train above the frozen stages on the source train folder (``convN``), or vote with the
    nearest neighbours (``knn-<stage>``); predict the val folder."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"{TASK}: unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    cfg = SourceClsConfig.from_mapping(ctx.config, protocol)
    cfg.input_size = cfg.input_size or representation.network.spec.input_size
    cfg.store_size = cfg.store_size or round(cfg.input_size * 1.125)
    _check(cfg)
    train_dir, val_dir = source_folders(cfg, ctx.data_root)
    t0 = time.perf_counter()
    folders = dict(num_workers=cfg.data_workers, device=ctx.device, log=ctx.log)
    train_set = LabelledImages(train_dir, cfg.store_size, cfg.data, progress=ctx.progress,
                               what=f"{TASK} train", **folders)
    val_set = LabelledImages(val_dir, cfg.store_size, cfg.data, what=f"{TASK} val", **folders)
    targets = val_targets(train_set, val_set, val_dir)
    val_paths, _, _ = list_image_folder(val_dir)
    ids = image_ids(val_paths, val_dir)
    reset_peak_memory(ctx.device)
    t_data = time.perf_counter() - t0

    source, rescale_stats = representation, None
    if cfg.rescale:
        source, rescale_stats = rescaled(representation, _rescale_sample(train_dir, cfg),
                                         cfg.rescale_images, ctx.device)
    info = {"split": "val", "train_dir": str(train_dir), "val_dir": str(val_dir),
            "train_images": len(train_set), "test_images": len(val_set),
            "classes": len(train_set.classes), "data": train_set.mode, "input_size": cfg.input_size,
            "store_size": cfg.store_size, "amp": cfg.amp, "rescale": rescale_stats}
    if protocol in KNN_PROTOCOLS:
        stage = knn_stage(protocol)
        scores, width = knn_predict(source, stage, train_set, val_set, cfg, ctx)
        t_train = 0.0
        info.update(stage=stage, feature_dim=width, knn_k=cfg.knn_k, knn_weighting=cfg.knn_weighting,
                    feature_cache=cfg.feature_cache)
    else:
        model = frozen_classifier(source, len(train_set.classes), protocol, ctx.seed)
        final_loss, iterations = train(model, train_set, cfg, ctx)
        t_train = time.perf_counter() - t0 - t_data
        scores = predict(model, val_set, cfg, ctx)
        info.update(frozen=list(model.frozen), reinitialised=list(STAGES[len(model.frozen):]),
                    final_loss=final_loss, epochs=cfg.epochs, iterations=iterations,
                    batch_size=cfg.batch_size, lr=cfg.lr, crop_mode=cfg.crop_mode,
                    crop_scale=list(cfg.crop_scale))
    t_total = time.perf_counter() - t0
    info["peak_memory_mb"] = peak_memory_mb(ctx.device)
    classes = tuple(train_set.classes)
    return TransferOutput(
        predictions=Predictions("label", classes, ids, scores=scores),
        ground_truth=LabelGroundTruth(classes, ids, targets),
        metric=cfg.metric, extra_metrics=cfg.extra_metrics,
        timing={"data": t_data, "train": t_train, "predict": t_total - t_data - t_train,
                "transfer": t_total},
        info=info)


@hookimpl
def benchharness_tasks():
    """Source-set classification with conv1..convN frozen (Table 5.2), and k-NN on it."""
    # no dataset for `run` to locate up front: the folders come from the task's settings
    # (source_folders checks them when the job starts)
    return [Task(TASK, PROTOCOLS, (), transfer,
                 "source-set (ImageNet) top-1 with conv1..convN frozen, the rest re-initialised "
                 "and trained (Noroozi & Favaro 2016; Table 5.2); k-NN on a frozen stage",
                 default_protocols=CONV_STAGES)]
