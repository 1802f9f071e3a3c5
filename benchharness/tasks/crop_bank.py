"""A fixed, seeded bank of random crops per image, and frozen-layer features computed on it.

The published protocols train on random crops drawn afresh at every iteration. When layers are
frozen, their output for a given crop never changes, so a speed option (``crop_bank = true``)
draws each training crop from a fixed bank of K crops per image instead (seeded independently of
the transfer seed): the frozen part then runs once per (representation, layer, crop), and the
features are cached on disk and reused by every later job and seed. The test crops are always a
bank (K random crops per image, as the reference's 10 random test crops).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import load_file, save

from .. import __version__, atomic
from ..accel import precision
from ..data.loading.transforms import crop_batch, sample_boxes
from ..data.voc.identity import identify
from ..suite import config_hash


@dataclass
class CropBank:
    """``boxes`` [N, K, 4] crop boxes in a ``side`` x ``side`` image, ``flips`` [N, K] mirrors."""

    boxes: torch.Tensor
    flips: torch.Tensor

    @classmethod
    def make(cls, n: int, k: int, side: int, scale, ratio=(3 / 4, 4 / 3), seed: int = 0,
             mirror: bool = True, mode: str = "area", out_size: int = 0) -> "CropBank":
        """K random-scale crops (and mirror flags) for each of ``n`` images, from ``seed``;
        ``mode`` and ``out_size`` as in :func:`..data.loading.transforms.sample_boxes`."""
        gen = torch.Generator().manual_seed(seed)
        boxes = sample_boxes(n * k, side, out_size, mode, tuple(scale), tuple(ratio), gen).view(n, k, 4)
        flips = (torch.rand(n, k, generator=gen) < 0.5) if mirror else torch.zeros(n, k, dtype=torch.bool)
        return cls(boxes, flips)

    @property
    def k(self) -> int:
        return self.boxes.shape[1]

    def crops(self, images: torch.Tensor, idx: torch.Tensor, which: torch.Tensor, out_size: int):
        """Float crops of ``images[idx]`` using bank entries ``which`` (one per sample), made on
        the device the images live on."""
        idx, which = idx.cpu(), which.cpu()
        return crop_batch(images[idx.to(images.device)], self.boxes[idx, which], out_size,
                          self.flips[idx, which])


@torch.no_grad()
def compute_features(images: torch.Tensor, bank: CropBank, out_size: int,
                     frozen: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                     batch_size: int = 256, progress=None) -> torch.Tensor:
    """The frozen part's output for every (image, bank crop): a tensor [N, K, ...] on the CPU."""
    n, k = bank.boxes.shape[:2]
    pairs = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(k), indexing="ij"), -1).view(-1, 2)
    chunks = range(0, len(pairs), batch_size)
    out = None
    for start in (progress(chunks, desc="frozen features", leave=False) if progress else chunks):
        idx, which = pairs[start:start + batch_size].unbind(1)
        feats = frozen(bank.crops(images, idx, which, out_size).to(device)).float().cpu()
        if out is None:
            out = torch.empty((n * k, *feats.shape[1:]), dtype=torch.float32)
        out[start:start + len(feats)] = feats
    return out.view(n, k, *out.shape[1:])


def load_features(cache_file: Path | None) -> torch.Tensor | None:
    """The features stored in ``cache_file``; None when there is none, or it is torn or foreign
    (the caller then computes them again and overwrites it)."""
    if cache_file is None or not cache_file.is_file():
        return None
    try:
        return load_file(str(cache_file))["features"]
    except Exception:
        return None


def store_features(cache_file: Path, features: torch.Tensor) -> None:
    """Write ``features`` to ``cache_file`` atomically (safetensors, key ``features``)."""
    atomic.write_bytes(cache_file, save({"features": features.contiguous()}))


def cached_features(cache_file: Path | None, compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
    """Load features from ``cache_file`` or compute and store them; returns (features, was_cached)."""
    feats = load_features(cache_file)
    if feats is not None:
        return feats, True
    feats = compute()
    if cache_file is not None:
        store_features(cache_file, feats)
    return feats, False


def feature_cache_key(representation, *, device: torch.device, amp: str, data_root: Path,
                      settings: Mapping[str, Any]) -> str | None:
    """The cache key of frozen features: everything that changes them, or None when the
    representation has no ``config_hash`` (not cacheable).

    It holds the representation's configuration hash and backbone, its input convention (every
    field of ``representation.input``), the arithmetic (``bf16`` or ``fp32``, from ``amp`` on
    ``device``), the data's identity (split files included), the package version, and the
    caller's ``settings`` (layer, split, crop sizes, bank size, scale, seed, rescaling...).
    """
    rep_key = representation.meta.get("config_hash")
    if not rep_key:
        return None
    return config_hash({
        "rep": rep_key, "backbone": getattr(representation, "backbone", None),
        "input": asdict(representation.input), "precision": precision(device, amp),
        "data": identify(data_root).key, "version": __version__, "settings": dict(settings)})
