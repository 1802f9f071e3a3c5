"""``sound``: ambient sound as supervision for visual learning (Owens et al. 2016), ``self-sup``.

Each clip's audio is summarised by sound-texture statistics (McDermott & Simoncelli: envelopes
of an ERB-spaced filterbank, compressed; per band their mean, coefficient of variation and
modulation power in octave bands, and the correlations between bands; see
:mod:`benchharness_plugins.sound.texture`), standardised over the training clips. Then either:

- ``target = "clusters"`` (default, the paper's main model): k-means with ``clusters`` (30)
  centres; the trunk plus a linear layer on fc7 predicts a frame's cluster (softmax
  cross-entropy);
- ``target = "binary"``: the statistics are projected on their first ``bits`` principal
  components and each is thresholded at its median over the training clips, giving a
  ``bits``-bit code; the network predicts every bit (binary cross-entropy).

An epoch shows every training clip once, through one of its frames drawn at random (a random
crop, mirrored half of the time), since a clip's frames all share its sound. Every stage,
conv1..fc7, is trained. The pretext measurement is taken on held-out clips (4 frames each,
centre crops), whose targets come from the statistics and k-means / PCA fitted on the training
clips: cluster accuracy with chance the largest cluster's share among the held-out frames, or,
for the binary code, the mean bit accuracy with chance the mean over bits of the majority
value's share (what always answering each bit's commoner value would score; the per-bit
figures are stored as ``per_bit`` and ``per_bit_chance``); ``value_at_init`` is the untrained
network's figure on the same frames. That chance is measured on the
held-out clips themselves, so with few of them it exceeds 0.5 (about 0.57 for 32 clips) even
though the thresholds are the training medians. Bits follow the principal components in order
of variance: the leading ones carry the sound classes, the trailing ones mostly within-class
variation that a frame cannot predict, so fewer bits give a more learnable code.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchharness import hookimpl
from benchharness.accel import prepare_model
from benchharness.backbones import STAGES
from benchharness.data.loading.clip_source import clip_folder, load_clip_split
from benchharness.data.loading.transforms import center_crop_batch, random_crop_batch
from benchharness.interfaces import Method, RunContext
from benchharness.representation import InputConvention, Representation
from benchharness.training import OneCycleEpochs, with_value_at_init
from .codes import BinaryCodes, KMeans
from .texture import TextureStatistics, standardise

DEFAULTS = {
    "data": "auto", "data_workers": 2,  # frames in memory, streamed from disk, or by size
    "epochs": 30, "batch_size": 32, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4,
    "crop_scale": (0.35, 1.0),
    "target": "clusters", "clusters": 30, "bits": 30, "kmeans_restarts": 4,
    # texture statistics
    "bands": 16, "low_hz": 80.0, "high_hz": 7000.0, "envelope_rate": 400, "compression": 0.3,
    # clips
    "video_dir": None, "frames": 16, "frame_rate": None, "store_size": None,
    "audio_rate": 16_000, "audio_seconds": 1.0,
    "held_out": 0.1, "eval_frames": 4, "seed": 0,
}
TARGETS = ("clusters", "binary")


def _settings(ctx: RunContext, input_size: int) -> dict:
    unknown = set(ctx.config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"sound: unknown settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **ctx.config}
    if cfg["target"] not in TARGETS:
        raise ValueError(f"sound: target must be one of {TARGETS}, not {cfg['target']!r}")
    cfg["store_size"] = cfg["store_size"] or round(1.125 * input_size)
    return cfg


def sound_targets(train_audio: np.ndarray, held_audio: np.ndarray, cfg: dict, sample_rate: int,
                  seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Targets of the training and held-out clips from their audio: cluster indices (int64
    [N]) or binary codes (float32 [N, bits]), fitted on the training clips only; plus facts
    about the fit for the representation's metadata."""
    stats = TextureStatistics(sample_rate, cfg["bands"], cfg["low_hz"], cfg["high_hz"],
                              cfg["envelope_rate"], cfg["compression"])
    train_z, mean, std = standardise(stats(train_audio))
    held_z = standardise(stats(held_audio), mean, std)[0] if len(held_audio) else train_z[:0]
    if cfg["target"] == "clusters":
        if len(train_z) < cfg["clusters"]:
            raise ValueError(f"sound: {len(train_z)} training clips cannot make {cfg['clusters']} "
                             "clusters; lower `clusters`")
        km = KMeans(cfg["clusters"], cfg["kmeans_restarts"], seed=seed).fit(train_z)
        train_y, held_y = km.predict(train_z), km.predict(held_z)
        sizes = np.bincount(train_y, minlength=cfg["clusters"])
        info = {"statistics": train_z.shape[1], "clusters": cfg["clusters"], "inertia": km.inertia,
                "largest_cluster_share": float(sizes.max() / sizes.sum())}
        return torch.from_numpy(train_y), torch.from_numpy(held_y), info
    codes = BinaryCodes(cfg["bits"]).fit(train_z)
    info = {"statistics": train_z.shape[1], "bits": cfg["bits"]}
    return (torch.from_numpy(codes.encode(train_z)).float(),
            torch.from_numpy(codes.encode(held_z)).float(), info)


def _loss(logits: torch.Tensor, targets: torch.Tensor, binary: bool) -> torch.Tensor:
    if binary:  # summed over bits, averaged over the batch (Caffe's sigmoid cross-entropy)
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(logits)
    return F.cross_entropy(logits, targets)


def pretrain(ctx: RunContext) -> Representation:
    """Train the trunk to predict each frame's sound cluster (or code); returns conv1..fc7."""
    torch.manual_seed(ctx.seed)  # before the network is built: its initial weights are drawn from it
    network = ctx.build_backbone()
    size = network.spec.input_size
    cfg = _settings(ctx, size)
    folder = clip_folder(ctx.data_root, cfg["video_dir"])
    clips, train_idx, held_idx = load_clip_split(folder, cfg, cfg["store_size"], cfg["held_out"], ctx.seed,
                                                 audio=True, cache_dir=ctx.cache_dir, progress=ctx.progress,
                                                 log=ctx.log, what="sound clips")
    t_stats = time.perf_counter()
    audio = clips.audio.numpy()
    train_y, held_y, target_info = sound_targets(audio[train_idx.numpy()], audio[held_idx.numpy()], cfg,
                                                 clips.audio_rate, ctx.seed)
    stats_seconds = time.perf_counter() - t_stats
    binary = cfg["target"] == "binary"
    outputs = cfg["bits"] if binary else cfg["clusters"]
    model = prepare_model(nn.Sequential(network, nn.Linear(network.out_dim, outputs)), ctx.device)
    convention = InputConvention()
    frames = clips.frames  # uint8 [N, T, S, S, 3]
    initial = held_out_accuracy(model, frames[held_idx], held_y, cfg, size, convention, ctx)  # untrained
    loop = OneCycleEpochs(ctx, model, cfg, max(1, len(train_idx) // cfg["batch_size"]), "sound",
                          pct_start=0.15)
    gen = loop.generator
    start = time.perf_counter()
    for _ in loop:
        order = torch.randperm(len(train_idx), generator=gen)
        for step in range(loop.steps_per_epoch):
            rows = order[step * cfg["batch_size"]:(step + 1) * cfg["batch_size"]]
            picked = torch.randint(0, frames.shape[1], (len(rows),), generator=gen)
            images = frames[train_idx[rows], picked].permute(0, 3, 1, 2)
            x = random_crop_batch(images, size, gen, scale=tuple(cfg["crop_scale"]))
            logits = model(convention.normalise(x.to(ctx.device)))
            loop.step(_loss(logits, train_y[rows].to(ctx.device), binary))
    train_seconds = time.perf_counter() - start
    pretext = with_value_at_init(held_out_accuracy(model, frames[held_idx], held_y, cfg, size, convention, ctx),
                                 initial, ctx.log)
    return Representation(network.cpu(), ctx.backbone, convention, learned_stages=STAGES, meta={
        "pretrain_data": str(folder), "pretrain_clips": len(train_idx), "target": cfg["target"],
        "sound_targets": target_info, "statistics_seconds": stats_seconds,
        "train_seconds": train_seconds, "pretext": pretext})


@torch.no_grad()
def held_out_accuracy(model: nn.Module, frames: torch.Tensor, targets: torch.Tensor, cfg: dict, size: int,
                      convention: InputConvention, ctx: RunContext) -> dict | None:
    """Accuracy on ``eval_frames`` evenly spaced frames (centre crops) of each held-out clip."""
    if len(frames) == 0:
        return None
    model.eval()
    binary = cfg["target"] == "binary"
    chosen = np.linspace(0, frames.shape[1] - 1, min(cfg["eval_frames"], frames.shape[1])).round().astype(int)
    images = frames[:, chosen].reshape(-1, *frames.shape[2:]).permute(0, 3, 1, 2)
    y = targets.repeat_interleave(len(chosen), dim=0)
    predictions = []
    for s in range(0, len(images), 256):
        x = convention.normalise(center_crop_batch(images[s:s + 256], size).to(ctx.device))
        logits = model(x).cpu()
        predictions.append((logits > 0).float() if binary else logits.argmax(1))
    predicted = torch.cat(predictions)
    if binary:
        share = y.mean(0)
        per_bit = (predicted == y).float().mean(0)
        majority = torch.maximum(share, 1 - share)
        return {"metric": "bit-accuracy", "value": per_bit.mean().item(),
                "chance": majority.mean().item(), "held_out_frames": len(y),
                "held_out_clips": len(frames),
                "per_bit": [round(v, 4) for v in per_bit.tolist()],
                "per_bit_chance": [round(v, 4) for v in majority.tolist()]}
    counts = torch.bincount(y, minlength=cfg["clusters"])
    return {"metric": "cluster-accuracy", "value": (predicted == y).float().mean().item(),
            "chance": counts.max().item() / len(y), "held_out_frames": len(y), "held_out_clips": len(frames)}


@hookimpl
def benchharness_methods():
    """Predicting a frame's ambient-sound cluster from the image."""
    return [Method("sound", "self-sup", ("video", "audio"), pretrain,
                   "predict the clip's sound-texture cluster from a frame (Owens et al. 2016)")]
