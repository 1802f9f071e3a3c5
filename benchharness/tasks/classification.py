"""VOC 2007 multi-label classification transfer (``voc07-cls``), after Krahenbuhl et al. 2016.

Protocols, over the representation's fixed stage names:

- ``fc8``: everything through fc7 frozen (fc6/fc7 as pretrained, random where the method has
  none); only a new linear classifier trains.
- ``fc6-8``: conv1..conv5 frozen; fc6, fc7 and the new classifier train.
- ``all``: the whole network fine-tunes.

Training: multi-label sigmoid cross-entropy with 'difficult' labels ignored, random-scale crops
and mirroring, SGD with momentum and a step schedule. Testing: scores averaged over a fixed
bank of random crops (10 by default). Scored by the VOC AP evaluators.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from ..backbones import STAGES
from ..data.classes import VOC_CLASSES
from ..data.transforms import random_crop_batch, resize_square
from ..data.voc import VOCDevkit, load_image, locate_devkit
from ..hookspecs import hookimpl
from ..interfaces import ClsGroundTruth, Predictions, RunContext, Task, TransferOutput
from ..representation import Representation

PROTOCOLS = ("fc8", "fc6-8", "all")
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
    batch_size: int = 64
    lr: float = 0.01
    lr_pretrained: float = 0.0  # lr of pretrained stages that train; 0: same as lr
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_steps: int = 3  # lr is divided by 10 this many times, evenly over training
    crop_scale: tuple[float, float] = (0.25, 1.0)
    test_crops: int = 10
    metric: str = "voc07-11pt"
    extra_metrics: tuple[str, ...] = ("sklearn-ap", "voc10-area")

    @classmethod
    def from_mapping(cls, config, protocol: str) -> "ClsConfig":
        """Top-level keys of the task's suite section, overridden by its ``[protocol]`` table."""
        names = {f.name for f in fields(cls)}
        merged = {k: v for k, v in config.items() if k in names}
        merged.update({k: v for k, v in (config.get(protocol) or {}).items() if k in names})
        unknown = set(config) - names - set(PROTOCOLS) - {"protocols"}
        if unknown:
            raise ValueError(f"voc07-cls: unknown settings {sorted(unknown)}; known: {sorted(names)}")
        for key in ("crop_scale", "extra_metrics"):
            if key in merged:
                merged[key] = tuple(merged[key])
        return cls(**merged)


def load_split(devkit: VOCDevkit, year: str, split: str, size: int, ctx: RunContext):
    """All images of a split resized to ``size`` x ``size`` (uint8) with their labels."""
    image_ids, labels = devkit.read_class_labels(year, split)
    images = torch.empty((len(image_ids), 3, size, size), dtype=torch.uint8)
    for i, image_id in enumerate(ctx.bar(image_ids, desc=f"load VOC{year} {split}", leave=False)):
        images[i] = resize_square(load_image(devkit.image_path(year, image_id)), size)
    return image_ids, labels, images


class Classifier(nn.Module):
    """The trunk up to fc7 plus a new linear fc8; stages through ``frozen_through`` are fixed."""

    def __init__(self, representation: Representation, n_classes: int, frozen_through: str | None):
        super().__init__()
        self.trunk = copy.deepcopy(representation.network)
        self.input = representation.input
        self.fc8 = nn.Linear(self.trunk.out_dim, n_classes)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)
        self.frozen_through = frozen_through
        frozen = STAGES[:STAGES.index(frozen_through) + 1] if frozen_through else ()
        for name in frozen:
            for p in self.trunk.stage(name).parameters():
                p.requires_grad_(False)
        self.frozen = frozen

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:  # frozen stages behave as at test time (no dropout)
            self.trunk.stage(name).eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.input.normalise(images)
        if self.frozen_through:
            with torch.no_grad():
                h = self.trunk.forward_to(x, self.frozen_through)
            h = self.trunk.forward_from(h, self.frozen_through)
        else:
            h = self.trunk(x)
        return self.fc8(h)


def _param_groups(model: Classifier, representation: Representation, cfg: ClsConfig):
    pretrained, new = [], list(model.fc8.parameters())
    for name in STAGES:
        params = [p for p in model.trunk.stage(name).parameters() if p.requires_grad]
        (pretrained if name in representation.learned_stages else new).extend(params)
    groups = [{"params": new, "lr": cfg.lr}]
    if pretrained:
        groups.append({"params": pretrained, "lr": cfg.lr_pretrained or cfg.lr})
    return groups


def train(model: Classifier, representation, images, labels, cfg: ClsConfig, ctx: RunContext):
    """Fit the classifier with masked sigmoid cross-entropy; returns the last epoch's mean loss."""
    device = ctx.device
    targets = torch.as_tensor(labels == 1, dtype=torch.float32)
    weights = torch.as_tensor(labels != 0, dtype=torch.float32)  # difficult -> ignored
    opt = torch.optim.SGD(_param_groups(model, representation, cfg), momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(images) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    milestones = [round(total * (i + 1) / (cfg.lr_steps + 1)) for i in range(cfg.lr_steps)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
    gen = torch.Generator().manual_seed(ctx.seed)
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    model.to(device).train()
    epoch_loss = float("nan")
    for _ in ctx.bar(range(cfg.epochs), desc="train", leave=False):
        order = torch.randperm(len(images), generator=gen)
        running = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x = random_crop_batch(images[idx], cfg.input_size, gen, scale=cfg.crop_scale).to(device)
            # as Caffe's SigmoidCrossEntropyLoss: summed over classes, averaged over images
            loss = (loss_fn(model(x), targets[idx].to(device)) * weights[idx].to(device)).sum() / len(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        epoch_loss = running / steps_per_epoch
        if not np.isfinite(epoch_loss):
            raise FloatingPointError(f"training loss became {epoch_loss}")
    return epoch_loss


@torch.no_grad()
def predict(model: Classifier, images, cfg: ClsConfig, ctx: RunContext) -> np.ndarray:
    """Class scores averaged over ``cfg.test_crops`` seeded random crops (mirrored at random)."""
    model.to(ctx.device).eval()
    gen = torch.Generator().manual_seed(10_000 + ctx.seed)
    scores = torch.zeros(len(images), model.fc8.out_features)
    for _ in range(cfg.test_crops):
        for start in range(0, len(images), 256):
            batch = images[start:start + 256]
            x = random_crop_batch(batch, cfg.input_size, gen, scale=cfg.crop_scale).to(ctx.device)
            scores[start:start + 256] += model(x).float().cpu()
    return (scores / cfg.test_crops).numpy()


def transfer(representation: Representation, protocol: str, ctx: RunContext) -> TransferOutput:
    """Train on the train split under ``protocol`` and predict the test split."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"voc07-cls: unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    cfg = ClsConfig.from_mapping(ctx.config, protocol)
    cfg.input_size = cfg.input_size or representation.network.spec.input_size
    cfg.store_size = cfg.store_size or round(cfg.input_size * 1.25)
    torch.manual_seed(ctx.seed)
    devkit = VOCDevkit(locate_devkit(ctx.data_root))
    t0 = time.perf_counter()
    _, train_labels, train_images = load_split(devkit, cfg.year, cfg.train_split, cfg.store_size, ctx)
    test_ids, test_labels, test_images = load_split(devkit, cfg.year, cfg.test_split, cfg.store_size, ctx)
    t_data = time.perf_counter() - t0

    model = Classifier(representation, len(VOC_CLASSES), FROZEN_THROUGH[protocol])
    final_loss = train(model, representation, train_images, train_labels, cfg, ctx)
    t_train = time.perf_counter() - t0 - t_data
    scores = predict(model, test_images, cfg, ctx)
    t_total = time.perf_counter() - t0
    return TransferOutput(
        predictions=Predictions("cls", VOC_CLASSES, test_ids, scores=scores),
        ground_truth=ClsGroundTruth(VOC_CLASSES, test_ids, test_labels),
        metric=cfg.metric, extra_metrics=cfg.extra_metrics,
        timing={"data": t_data, "train": t_train, "predict": t_total - t_data - t_train,
                "transfer": t_total},
        info={"final_loss": final_loss, "train_images": len(train_labels),
              "test_images": len(test_ids), "frozen": list(model.frozen),
              "epochs": cfg.epochs, "input_size": cfg.input_size},
    )


@hookimpl
def benchharness_tasks():
    """VOC 2007 classification under the fc8, fc6-8 and all protocols."""
    return [Task("voc07-cls", PROTOCOLS, ("voc2007",), transfer,
                 "PASCAL VOC 2007 multi-label classification (Krahenbuhl et al. 2016 protocols)")]
