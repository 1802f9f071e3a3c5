"""``egomotion``: learning to see by moving (Agrawal, Carreira, Malik 2015), group ``self-sup``.

Two frames of one sequence, at most ``max_gap`` frames apart, go through the same trunk (the
paper's base CNN, AlexNet's conv1..conv5); their conv5 maps, concatenated along the channels,
feed the top network (the paper's TCNN: two convolutions, a fully connected layer with dropout)
and one softmax per dimension of the camera's motion between the frames: translation tx, ty and
rotation rz, each cut into ``bins`` uniform bins (:mod:`benchharness_plugins.egomotion.motion`).
The loss is the sum of the three cross-entropies. Frames and their camera poses come from
``<data root>/egomotion`` (the synthetic world's sequences) or the ``sequence_dir`` setting, in
the format of :mod:`benchharness_plugins.egomotion.sequences`.

At the synthetic world's scale: 7 bins per dimension (the paper: 20 on KITTI, for its much
larger set of pairs), over the 0.98-quantile of each dimension's |motion| on the training pairs
(the paper bins the whole range uniformly; the quantile keeps a few jittered outliers from
leaving the middle bins empty); frames at most 3 apart (KITTI: 7); a smaller TCNN
(``top_width``: a 3x3 and a 1x1 convolution of 128 channels, fc 128; the paper: 256,
128 channels and fc 500). Only conv1..conv5 are learned (fc6 and fc7 stay random): the TCNN is
part of the pretext network and is not exported. As for the other pretext networks without
normalisation, the learned stages get back their initial output scale at the end
(:func:`~benchharness.data.loading.pretext_pool.restore_scales_on`).

The pretext measurement is the held-out bin accuracy per dimension (pairs of held-out sequences
only; ``value`` is the mean over tx, ty, rz), with its chance level (the larger of ``1 / bins``
and the held-out rate of each dimension's most frequent training bin, averaged the same way) and
``value_at_init``, the same figure for the untrained network. Training state is saved every
epoch (:class:`~benchharness.training.OneCycleEpochs`), so a killed pretraining resumes.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchharness import hookimpl
from benchharness.accel import prepare_model
from benchharness.backbones import CONV_STAGES
from benchharness.data.loading.pretext_pool import restore_scales_on, split_held_out
from benchharness.interfaces import DataError, Method, RunContext
from benchharness.representation import InputConvention, Representation
from benchharness.training import OneCycleEpochs
from .motion import DIMENSIONS, bin_edges, bin_ranges, frame_pairs, motion_bins, relative_motion
from .sequences import list_sequences, load_frames

DEFAULTS = {
    # the paper's KITTI setting in comments
    "epochs": 3, "batch_size": 32, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
    "bins": 7,                 # per dimension (paper: 20)
    "range_quantile": 0.98,    # bins span [-q, q], q this quantile of |motion| (paper: the range)
    "max_gap": 3,              # frames at most this far apart (paper: 7)
    "top_width": 128,          # TCNN width (paper: C256-C128-F500)
    "dropout": 0.5,
    "sequence_dir": None,      # default <data root>/egomotion
    "store_size": None,        # frames' side when decoded; default the backbone's input side
    "held_out": 0.1, "seed": 0, "restore_scale": True,
}


def _settings(ctx: RunContext) -> dict:
    unknown = set(ctx.config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"egomotion: unknown settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **ctx.config}
    for key, low in (("epochs", 1), ("batch_size", 1), ("bins", 2), ("max_gap", 1), ("top_width", 1)):
        if int(cfg[key]) < low:
            raise ValueError(f"egomotion: {key} must be at least {low}, not {cfg[key]!r}")
    if not 0 < float(cfg["range_quantile"]) <= 1:
        raise ValueError(f"egomotion: range_quantile must be in (0, 1], not {cfg['range_quantile']!r}")
    return cfg


class EgomotionNet(nn.Module):
    """The siamese pretext network: the shared trunk through conv5 (base CNN), the two maps
    concatenated, the top network and one ``bins``-way output per motion dimension."""

    def __init__(self, trunk: nn.Module, bins: int, width: int, dropout: float):
        super().__init__()
        self.trunk = trunk
        self.bins = bins
        self.dropout = dropout
        self.top = nn.Sequential(
            nn.Conv2d(2 * trunk.conv5_channels, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(width, width), nn.ReLU(inplace=True))
        self.out = nn.Linear(width, len(DIMENSIONS) * bins)

    def forward(self, first: torch.Tensor, second: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits [N, 3, bins] of the motion from frames ``first`` [N, ...] to ``second``.
        In training, dropout before the output draws its mask from ``generator`` (the loop's,
        saved with every checkpoint, so a resumed run draws the same masks)."""
        maps = self.trunk.forward_to(torch.cat([first, second]), "conv5")
        h = self.top(torch.cat([maps[:len(first)], maps[len(first):]], dim=1))
        if self.training and self.dropout > 0 and generator is not None:
            keep = torch.rand(h.shape, generator=generator) >= self.dropout
            h = h * keep.to(h.device) / (1 - self.dropout)
        return self.out(h).view(len(first), len(DIMENSIONS), self.bins)


def egomotion_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The sum over the dimensions of each one's mean softmax cross-entropy; logits
    [N, D, bins], labels [N, D]."""
    return sum(F.cross_entropy(logits[:, d], labels[:, d]) for d in range(logits.shape[1]))


def pretrain(ctx: RunContext) -> Representation:
    """Train the siamese network to classify the binned camera motion between two frames;
    returns conv1..conv5 as learned."""
    cfg = _settings(ctx)
    torch.manual_seed(ctx.seed)
    network = ctx.build_backbone()
    size = network.spec.input_size
    folder = Path(cfg["sequence_dir"]).expanduser() if cfg["sequence_dir"] else Path(ctx.data_root) / "egomotion"
    sequences = list_sequences(folder)
    if len(sequences) < 2:
        raise DataError(folder, f"{len(sequences)} sequence(s): at least 2 are needed (one to train on, "
                                "one held out)")
    frames, offsets = load_frames(sequences, int(cfg["store_size"] or size), ctx.progress)
    pairs = labelled_pairs(sequences, offsets, cfg, ctx.seed)
    train, held, edges = pairs["train"], pairs["held"], pairs["edges"]
    train_labels, held_labels = pairs["train_labels"], pairs["held_labels"]
    if len(train) < cfg["batch_size"]:
        raise DataError(folder, f"only {len(train)} training frame pairs (max_gap {cfg['max_gap']}): "
                                f"fewer than one batch of {cfg['batch_size']}")
    initial = copy.deepcopy(network)
    convention = InputConvention()
    model = prepare_model(EgomotionNet(network, int(cfg["bins"]), int(cfg["top_width"]), float(cfg["dropout"])),
                          ctx.device)
    at_init = held_out_accuracy(model, frames, held, held_labels, train_labels, convention, ctx)
    loop = OneCycleEpochs(ctx, model, cfg, len(train) // cfg["batch_size"], "egomotion", pct_start=0.2)
    gen = loop.generator
    start = time.perf_counter()
    for _ in loop:
        order = torch.randperm(len(train), generator=gen)
        for step in range(loop.steps_per_epoch):
            idx = order[step * cfg["batch_size"]:(step + 1) * cfg["batch_size"]]
            a, b = pair_frames(frames, train[idx.numpy()], convention, ctx.device)
            loop.step(egomotion_loss(model(a, b, gen), train_labels[idx].to(ctx.device)))
    train_seconds = time.perf_counter() - start
    pretext = held_out_accuracy(model, frames, held, held_labels, train_labels, convention, ctx)
    if pretext is not None and at_init is not None:
        pretext["value_at_init"] = at_init["value"]
        pretext["per_dimension_at_init"] = at_init["per_dimension"]
    scale = (restore_scales_on(network, initial, frames[:256], convention, CONV_STAGES, ctx.device)
             if cfg["restore_scale"] else None)
    return Representation(network.cpu(), ctx.backbone, convention, learned_stages=CONV_STAGES, meta={
        "pretrain_data": str(folder), "pretrain_sequences": pairs["train_sequences"], "frame_pairs": len(train),
        "bins": {d: edges[k].tolist() for k, d in enumerate(DIMENSIONS)},
        "train_seconds": train_seconds, "pretext": pretext, "scale_restored": scale})


def labelled_pairs(sequences: list, offsets: torch.Tensor, cfg: dict, seed: int) -> dict:
    """The frame pairs [P, 2] of the training sequences (``train``) and of the held-out ones
    (``held``, by ``cfg["held_out"]``), their motion bins [P, 3] (``train_labels``,
    ``held_labels``), the bins' ``edges`` (from the training pairs' motions) and the number of
    ``train_sequences``. ``offsets`` indexes each sequence's first frame (:func:`load_frames`)."""
    poses = np.concatenate([s.poses for s in sequences])
    train_seq, _ = split_held_out(len(sequences), cfg["held_out"], seed)
    pairs = frame_pairs(offsets.numpy(), int(cfg["max_gap"]))
    sequence_of = np.searchsorted(offsets.numpy(), pairs[:, 0], side="right") - 1
    in_train = np.isin(sequence_of, train_seq.numpy())
    motions = relative_motion(poses[pairs[:, 0]], poses[pairs[:, 1]])
    edges = bin_edges(bin_ranges(motions[in_train], float(cfg["range_quantile"])), int(cfg["bins"]))
    labels = torch.as_tensor(motion_bins(motions, edges))
    return {"train": pairs[in_train], "held": pairs[~in_train], "train_labels": labels[in_train],
            "held_labels": labels[~in_train], "edges": edges, "train_sequences": len(train_seq)}


def pair_frames(frames: torch.Tensor, pairs: np.ndarray, convention: InputConvention, device) -> tuple:
    """Network-ready first and second frames of ``pairs`` [n, 2]. No mirroring or cropping:
    either would change the motion the label names."""
    x = convention.normalise(frames[torch.as_tensor(pairs.reshape(-1))].to(device).float().div_(255))
    x = x.view(len(pairs), 2, *x.shape[1:])
    return x[:, 0], x[:, 1]


@torch.no_grad()
def held_out_accuracy(model: EgomotionNet, frames: torch.Tensor, pairs: np.ndarray, labels: torch.Tensor,
                      train_labels: torch.Tensor, convention: InputConvention, ctx: RunContext) -> dict | None:
    """Bin accuracy per dimension on the held-out pairs, their mean, and the chance level."""
    if len(pairs) == 0:
        return None
    was_training = model.training
    model.eval()
    predicted = []
    for s in range(0, len(pairs), 128):
        a, b = pair_frames(frames, pairs[s:s + 128], convention, ctx.device)
        predicted.append(model(a, b).argmax(-1).cpu())
    model.train(was_training)
    correct = (torch.cat(predicted) == labels).float().mean(0)
    bins = model.bins
    majority = [(labels[:, d] == torch.bincount(train_labels[:, d], minlength=bins).argmax()).float().mean().item()
                for d in range(len(DIMENSIONS))]
    chance = [max(1 / bins, m) for m in majority]
    return {"metric": "motion-bin-accuracy", "value": float(correct.mean()), "chance": float(np.mean(chance)),
            "per_dimension": dict(zip(DIMENSIONS, correct.tolist())),
            "chance_per_dimension": dict(zip(DIMENSIONS, chance)), "bins": bins,
            "held_out_pairs": len(pairs)}


@hookimpl
def benchharness_methods():
    """Egomotion classification from pairs of frames with known camera poses."""
    return [Method("egomotion", "self-sup", ("video",), pretrain,
                   "siamese classification of the binned camera motion between two frames "
                   "(Agrawal et al. 2015)")]
