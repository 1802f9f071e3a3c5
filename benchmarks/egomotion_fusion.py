"""Why `egomotion`'s pretext stays at chance on the synthetic world: the paper's late fusion
against early fusion, side by side on the same frame pairs.

Both networks are trained the same way (Adam, ``--lr``, ``--steps`` batches of 32 pairs, one
seed) on the world's training pairs, binned as `egomotion` bins them (``--bins`` per dimension),
and scored on the held-out sequences' pairs by the plugin's own measurement:

- ``late``: the plugin's network (Agrawal et al.'s siamese: each frame alone through the
  AlexNet trunk to conv5, the two maps concatenated, then the top network);
- ``early``: the same trunk and top network, but the two frames enter together as one
  6-channel image (the trunk's conv1 takes 6 channels), so conv1 compares their pixels.

If early fusion learns the motion and late fusion does not, the labels carry the motion (the
pixels show it) and it is the siamese design that needs more than this budget. Writes
``egomotion_fusion.json`` (per network: held-out accuracy per dimension, chance, seconds).

Usage: python benchmarks/egomotion_fusion.py [WORLD] [--steps 1000] [--bins 3] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from benchharness.backbones import build
from benchharness.representation import InputConvention
from benchharness_plugins.egomotion import (DEFAULTS, EgomotionNet, egomotion_loss, held_out_accuracy,
                                            labelled_pairs, pair_frames)
from benchharness_plugins.egomotion.motion import DIMENSIONS
from benchharness_plugins.egomotion.sequences import list_sequences, load_frames

HERE = Path(__file__).resolve().parent


class EarlyFusionNet(nn.Module):
    """The two frames stacked as one 6-channel image through the trunk to conv5, then the same
    top network as :class:`EgomotionNet` (its input: one conv5 map instead of two)."""

    def __init__(self, backbone: str, bins: int, width: int):
        super().__init__()
        self.trunk = build(backbone, in_channels=6)
        late = EgomotionNet(build(backbone), bins, width, dropout=0.0)
        late.top[0] = nn.Conv2d(self.trunk.conv5_channels, width, 3, padding=1)
        self.top, self.out, self.bins = late.top, late.out, bins

    def forward(self, first: torch.Tensor, second: torch.Tensor, generator=None) -> torch.Tensor:
        h = self.top(self.trunk.forward_to(torch.cat([first, second], dim=1), "conv5"))
        return self.out(h).view(len(first), len(DIMENSIONS), self.bins)


def train_and_score(model: nn.Module, frames, pairs: dict, args, convention) -> dict:
    """Train ``model`` on the training pairs and return the plugin's held-out measurement."""
    device = SimpleNamespace(device=torch.device("cpu"))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(0)
    train, labels = pairs["train"], pairs["train_labels"]
    start = time.perf_counter()
    model.train()
    for _ in range(args.steps):
        idx = torch.randint(len(train), (32,), generator=gen)
        a, b = pair_frames(frames, train[idx.numpy()], convention, device.device)
        loss = egomotion_loss(model(a, b), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    scored = held_out_accuracy(model, frames, pairs["held"], pairs["held_labels"], labels, convention, device)
    return {"per_dimension": scored["per_dimension"], "chance_per_dimension": scored["chance_per_dimension"],
            "value": scored["value"], "chance": scored["chance"], "train_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("world", nargs="?", default=str(HERE.parent / "data" / "synthetic-small"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--bins", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--backbone", default="alexnet-small")
    parser.add_argument("--out", default=str(HERE / "out"))
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = {**DEFAULTS, "bins": args.bins}
    sequences = list_sequences(Path(args.world) / "egomotion")
    size = build(args.backbone).spec.input_size
    frames, offsets = load_frames(sequences, size)
    pairs = labelled_pairs(sequences, offsets, cfg, seed=0)
    convention = InputConvention()
    figures = {"steps": args.steps, "bins": args.bins, "lr": args.lr, "backbone": args.backbone,
               "train_pairs": len(pairs["train"]), "held_out_pairs": len(pairs["held"])}
    for name, model in (("late", EgomotionNet(build(args.backbone), args.bins, cfg["top_width"], 0.0)),
                        ("early", EarlyFusionNet(args.backbone, args.bins, cfg["top_width"]))):
        torch.manual_seed(0)
        figures[name] = train_and_score(model, frames, pairs, args, convention)
        print(name, json.dumps(figures[name]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "egomotion_fusion.json").write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
