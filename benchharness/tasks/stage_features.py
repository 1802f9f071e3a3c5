"""One frozen stage's output for every image of a split, one centre crop each, cached on disk.

What the ``knn-<stage>`` protocols compare: each image enters once (the central
``input_size / store_size`` of the stored square, Caffe's test crop), runs through the trunk
to the stage, and its flattened output is one row of a float32 ``.npy`` file under
``<cache>/features/``, keyed by :func:`~benchharness.tasks.crop_bank.feature_cache_key`
(representation, backbone, input convention, precision, data, version, and the stage, split and
sizes). Rows are written as the batches arrive into a memory-mapped file, so a split larger than
memory (ImageNet's train folder, streamed) needs memory for one batch only; later jobs and seeds
memory-map the finished file. The file is published by a rename, so a killed run leaves none.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..accel import autocast, prepare_model
from ..data.loading.transforms import center_crop_batch


def centre_fraction(input_size: int, store_size: int) -> float:
    """The side fraction of a ``store_size`` square that a centred ``input_size`` crop covers
    (1 when the store is not larger)."""
    return min(1.0, input_size / store_size)


@torch.no_grad()
def stage_rows(network, convention, images: torch.Tensor, stage: str, input_size: int,
               device: torch.device, amp: str = "auto") -> torch.Tensor:
    """The flattened output of ``stage`` for the centre crops of uint8 ``images`` [B, 3, S, S]
    (float32 [B, D] on the CPU)."""
    crops = center_crop_batch(images, input_size, centre_fraction(input_size, images.shape[-1]))
    with autocast(device, amp):
        out = network.forward_to(convention.normalise(crops.to(device)), stage)
    return out.float().flatten(1).cpu()


def stage_features(network, convention, batches: Iterable[torch.Tensor], n: int, stage: str,
                   input_size: int, device: torch.device, amp: str = "auto",
                   cache_file: Path | None = None, progress=None) -> np.ndarray:
    """Rows [n, D] of :func:`stage_rows` for the images ``batches`` yields in order (uint8
    tensors, or ``(images, targets)`` pairs), read from ``cache_file`` when it holds ``n`` rows,
    else computed (with ``network`` in eval mode) and stored there. Without a cache file the
    rows are kept in memory."""
    if cache_file is not None and cache_file.is_file():
        try:
            cached = np.load(cache_file, mmap_mode="r")
            if cached.ndim == 2 and len(cached) == n:
                return cached
        except (OSError, ValueError):  # a torn or foreign file: compute it again
            pass
    net = prepare_model(network, device).eval()
    tmp, rows, done = None, None, 0
    try:
        for batch in (progress(batches, desc=f"{stage} features", leave=False) if progress else batches):
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            out = stage_rows(net, convention, images, stage, input_size, device, amp).numpy()
            if rows is None:
                if cache_file is not None:
                    cache_file.parent.mkdir(parents=True, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(prefix=f".{cache_file.name}.", suffix=".tmp",
                                               dir=cache_file.parent)
                    os.close(fd)
                    rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                     shape=(n, out.shape[1]))
                else:
                    rows = np.empty((n, out.shape[1]), dtype=np.float32)
            rows[done:done + len(out)] = out
            done += len(out)
        if done != n:
            raise ValueError(f"{stage} features: {done} images arrived, {n} expected")
        if tmp is not None:
            rows.flush()
            del rows
            os.replace(tmp, cache_file)
            tmp = None
            return np.load(cache_file, mmap_mode="r")
        return rows
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
