"""``train_step_efficiency``: how close the ``all`` protocol's fine-tuning loop comes to the bare
model step on the same device.

Both sides train the real suite's network (``alexnet`` at 227 pixels, batch 16 as in the
literature, or ``--batch``) with the loop's own precision and memory layout. The loop is
``voc07-cls``'s ``train`` (random-scale crops and mirroring of uint8 images kept where
``images_home`` puts them, masked sigmoid loss, SGD with the step schedule); the bare step is a
forward/backward/update on float tensors already on the device. The figure is the loop's
images/s over the bare step's. Meant for a GPU; on the CPU it runs (``--cpu``) but is not a
goal.

Usage: python benchmarks/train_step_efficiency.py [--images 2048] [--batch 16] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from benchharness.accel import autocast, images_home, prepare_model
from benchharness.backbones import build
from benchharness.interfaces import RunContext
from benchharness.representation import Representation
from benchharness.tasks.classification import Classifier, ClsConfig, train
from speed_file import merge_figures


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_images_per_second(model: Classifier, batch: int, size: int, device: torch.device,
                           steps: int, amp: str) -> float:
    """Forward/backward/SGD step on one float batch already on ``device``."""
    net = prepare_model(model, device).train()
    x = torch.rand(batch, 3, size, size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 20, device=device) < 0.1).float()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")

    def step():
        with autocast(device, amp):
            logits = net(x)
        loss = loss_fn(logits.float(), y) / batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(10):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def loop_images_per_second(model: Classifier, rep: Representation, n_images: int, cfg: ClsConfig,
                           device: torch.device) -> float:
    """One epoch of the suite's own ``train`` on ``n_images`` stored images (after a warm-up)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_images, 3, cfg.store_size, cfg.store_size), dtype=torch.uint8,
                           generator=gen)
    labels = torch.randint(-1, 2, (n_images, 20), generator=gen).numpy()
    images = images_home(images, device)
    ctx = RunContext(device, 0, Path("."), Path("."), rep.backbone)
    warm = ClsConfig(**{**cfg.__dict__, "epochs": 1})
    train(model, rep, images[: 10 * cfg.batch_size], labels[: 10 * cfg.batch_size], warm, ctx)
    _sync(device)
    start = time.perf_counter()
    train(model, rep, images, labels, warm, ctx)
    _sync(device)
    return (n_images // cfg.batch_size) * cfg.batch_size / (time.perf_counter() - start)


def measure(device: torch.device, n_images: int = 2048, batch: int = 16) -> dict:
    """Loop and bare images/s of the ``all`` protocol at 227 pixels, and their ratio."""
    torch.manual_seed(0)
    rep = Representation(build("alexnet"), "alexnet", meta={})
    cfg = ClsConfig(input_size=227, store_size=256, batch_size=batch)
    model = Classifier(rep, 20, None)
    bare = bare_images_per_second(model, batch, cfg.input_size, device, max(20, n_images // batch), cfg.amp)
    loop = loop_images_per_second(model, rep, n_images, cfg, device)
    return {"train_step_efficiency": round(loop / bare, 3),
            "train_loop_images_per_second": round(loop, 1),
            "train_bare_images_per_second": round(bare, 1),
            "train_step_device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "train_step_batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even without CUDA")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.cpu:
        raise SystemExit("no CUDA device: train_step_efficiency is a GPU figure (use --cpu to try it)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    figures = measure(device, args.images, args.batch)
    if device.type == "cuda":
        merge_figures(args.out, figures)
    else:  # a CPU figure is only a check that the code runs: not written
        print("\n".join(f"{key:32s} {value}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
