"""``supervised``: the ImageNet-style baseline (group ``sup``).

Trains the whole trunk plus a linear classifier with softmax cross-entropy on a labelled
``<class>/<image>`` tree: the synthetic world's source set by default, or ImageNet's train folder
(``source_dir`` in the suite's method section). Its pretext measurement is top-1 accuracy on the
held-out ``val`` folder beside the train folder (chance: the largest class's share), taken
before training too (``value_at_init``, the untrained trunk and classifier).

``data`` chooses where the decoded images live: ``memory`` (decoded once into one array),
``stream`` (decoded per minibatch by ``data_workers`` DataLoader worker processes, bounded
memory, for ImageNet-sized trees) or ``auto`` (memory while the decoded tree stays under
:data:`~benchharness.data.loading.streaming.MEMORY_BUDGET_BYTES`). Both see the same minibatches and
crops, so they train the same weights.

Data-parallel on several processes (``run --gpus-per-job N``): every rank draws the whole
minibatch and its crops from the same generator, trains on its contiguous share and
backpropagates its part of the whole minibatch's mean loss, so ``batch_size`` and ``lr`` keep
their meaning and the weights match one process's to float tolerance. That holds for trunks
without dropout (``alexnet-small``); with dropout (``alexnet``, ``caffenet``) each rank draws
its own masks, so the runs are equivalent in distribution only. No trunk has BatchNorm.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from benchharness import distributed, hookimpl
from benchharness.accel import prepare_model
from benchharness.data.datasets import locate_source
from benchharness.data.loading.labelled import LabelledImages
from benchharness.data.loading.transforms import center_crop_batch, random_crop_batch
from benchharness.interfaces import Method, RunContext
from benchharness.representation import InputConvention, Representation
from benchharness.training import OneCycleEpochs, with_value_at_init

DEFAULTS = {"epochs": 20, "batch_size": 64, "lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4,
            "crop_scale": (0.35, 1.0), "source_dir": None, "seed": 0,
            "data": "auto", "data_workers": 2}


def _settings(ctx: RunContext) -> dict:
    unknown = set(ctx.config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"supervised: unknown settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **ctx.config}


@distributed.supports()
def pretrain(ctx: RunContext) -> Representation:
    """Softmax classification of the source set's classes; returns the trained trunk."""
    cfg = _settings(ctx)
    torch.manual_seed(ctx.seed)
    train_dir = Path(cfg["source_dir"]) if cfg["source_dir"] else locate_source(ctx.data_root)
    network = ctx.build_backbone()
    size = network.spec.input_size
    store = round(size * 1.125)
    train = LabelledImages(train_dir, store, cfg["data"], cfg["data_workers"], ctx.device,
                           ctx.progress, ctx.log, "supervised train")
    head = nn.Linear(network.out_dim, len(train.classes))
    model = prepare_model(nn.Sequential(network, head), ctx.device)
    convention = InputConvention()
    val = _val_images(train_dir.parent / "val", store, cfg, ctx) if distributed.is_main() else None
    initial = _held_out_accuracy(model, convention, val, size, ctx)
    loop = OneCycleEpochs(ctx, model, cfg, max(1, len(train) // cfg["batch_size"]), "supervised",
                          pct_start=0.15)
    gen = loop.generator
    net = distributed.wrap(model)
    batches = train.epoch_batches(cfg["batch_size"], loop.steps_per_epoch, gen)
    start = time.perf_counter()
    for _ in loop:
        for images, targets in batches:
            x = random_crop_batch(images, size, gen, scale=tuple(cfg["crop_scale"]))
            if distributed.active():  # this rank's share of the whole minibatch's mean loss
                with distributed.own_randomness():
                    logits = net(convention.normalise(distributed.shard(x).to(ctx.device)))
                part = nn.functional.cross_entropy(
                    logits, distributed.shard(targets).to(ctx.device), reduction="sum")
                loop.step(distributed.global_mean(part, len(targets)))
                continue
            logits = model(convention.normalise(x.to(ctx.device)))
            loop.step(nn.functional.cross_entropy(logits, targets.to(ctx.device)))
    pretext = with_value_at_init(_held_out_accuracy(model, convention, val, size, ctx), initial, ctx.log)
    meta = {"pretrain_data": str(train_dir), "pretrain_images": len(train), "data": train.mode,
            "train_seconds": time.perf_counter() - start, "pretext": pretext}
    ddp = distributed.describe(cfg["batch_size"], cfg["lr"])
    if ddp:
        meta["distributed"] = ddp
    return Representation(network.cpu(), ctx.backbone, convention, meta=meta)


def _val_images(val_dir: Path, store: int, cfg: dict, ctx: RunContext) -> LabelledImages | None:
    """The held-out ``val`` tree beside the source's train folder, or None when there is none."""
    if not val_dir.is_dir():
        return None
    return LabelledImages(val_dir, store, cfg["data"], cfg["data_workers"], ctx.device, log=ctx.log,
                          what="supervised val")


@torch.no_grad()
def _held_out_accuracy(model, convention, val: LabelledImages | None, size: int, ctx: RunContext):
    if val is None:
        return None
    was_training = model.training
    model.eval()
    correct = 0
    for images, targets in val.in_order(256):
        x = convention.normalise(center_crop_batch(images, size).to(ctx.device))
        correct += (model(x).argmax(1).cpu() == targets).sum().item()
    chance = torch.bincount(val.targets).max().item() / len(val)
    model.train(was_training)
    return {"metric": "top1-accuracy", "value": correct / len(val), "chance": chance}


@hookimpl
def benchharness_methods():
    """Supervised classification pretraining on the labelled source set."""
    return [Method("supervised", "sup", ("images", "labels"), pretrain,
                   "softmax classification on the labelled source set (ImageNet stand-in)")]
