"""Images streamed from disk through DataLoader workers, one decode per item, bounded memory.

The in-memory path (:func:`~benchharness.data.loading.image_cache.decode_resized`) decodes a whole set
into one uint8 array: fastest for small worlds, impossible for ImageNet's 1.28M images. The
streamed path decodes each image when a minibatch needs it, in ``DataLoader`` worker processes,
with the same decoder and the same resize, so a streamed image equals the cached one bit for bit
and the batched augmentation of :mod:`~benchharness.data.loading.transforms` applies unchanged.

A method chooses with its ``data`` setting (:data:`DATA_MODES`): ``memory``, ``stream``, or
``auto`` (:func:`choose_data_mode`: memory while the decoded set stays under
:data:`MEMORY_BUDGET_BYTES`, streaming above).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data import default_collate

from ...interfaces import DataError
from ..voc.devkit import load_image
from . import folders
from .transforms import resize_square

DATA_MODES = ("auto", "memory", "stream")

MEMORY_BUDGET_BYTES = 2 * 1024 ** 3
"""``auto`` decodes into memory up to this many bytes of uint8 pixels. 2 GiB: every world the
harness generates stays in memory (the small one's source set is ~40 MiB at the small
AlexNet's size), where an epoch decodes nothing and today's numbers and speed are kept, while
ImageNet (~250 GB decoded at CaffeNet's 256-pixel store size) streams. At 2 GiB, the pool
executor's workers each holding a set still fit an ordinary machine's memory."""


def decoded_bytes(n_images: int, size: int) -> int:
    """Bytes of ``n_images`` decoded as uint8 [3, size, size]."""
    return n_images * 3 * size * size


def choose_data_mode(setting: str, n_images: int, size: int, what: str, log=None,
                     max_images: float | None = None, unit: str = "images") -> str:
    """``memory`` or ``stream`` for a set of ``n_images`` stored at ``size`` pixels.

    ``setting`` ``memory`` and ``stream`` are obeyed; ``auto`` streams when the decoded set would
    exceed :data:`MEMORY_BUDGET_BYTES` or ``max_images`` (the in-memory loader's limit,
    :data:`~benchharness.data.loading.folders.MAX_IN_MEMORY_IMAGES` by default; ``math.inf``: no limit
    on the count). The choice and its reason are passed to ``log`` (prefixed with ``what``;
    ``unit`` names what is counted).
    """
    if setting not in DATA_MODES:
        raise ValueError(f"{what}: data = {setting!r}; choose from {DATA_MODES}")
    limit = folders.MAX_IN_MEMORY_IMAGES if max_images is None else max_images
    size_bytes = decoded_bytes(n_images, size)
    bounds = f"{MEMORY_BUDGET_BYTES / 2 ** 30:.3g} GiB" + (f" / {limit} {unit}" if limit != math.inf else "")
    if setting != "auto":
        mode, why = setting, "as set"
    elif size_bytes > MEMORY_BUDGET_BYTES or n_images > limit:
        mode, why = "stream", f"auto: above {bounds}"
    else:
        mode, why = "memory", f"auto: within {bounds}"
    if log is not None:
        log(f"{what}: data = {mode} ({n_images} {unit}, {size_bytes / 2 ** 20:.0f} MiB decoded; {why})")
    return mode


@dataclass(frozen=True)
class _Unreadable:
    """An image that failed to decode in a worker, carried back to raise DataError in the loop."""
    path: str
    problem: str


class DecodedImages(Dataset):
    """Image files decoded one per item and resized to ``size`` x ``size``.

    Item ``i`` is ``(uint8 [3, size, size], target)``; the target is ``-1`` without ``targets``.
    Paths are kept as one numpy byte array, not a list of objects, so forked workers share them
    instead of copying every page that a reference count touches.
    """

    def __init__(self, paths: Sequence[Path | str], size: int, targets: Sequence[int] | None = None):
        self._paths = np.array([os.fsencode(p) for p in paths]) if len(paths) else np.array([], "S1")
        self._targets = (np.asarray(targets, dtype=np.int64) if targets is not None
                         else np.full(len(paths), -1, dtype=np.int64))
        self.size = size

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, i: int) -> Path:
        """The file of item ``i``."""
        return Path(os.fsdecode(self._paths[i]))

    def __getitem__(self, i: int):
        try:
            image = resize_square(load_image(self.path(i)), self.size)
        except DataError as exc:
            return _Unreadable(str(exc.path), exc.problem)
        return image, int(self._targets[i])


class EpochBatches(Sampler):
    """The minibatches of one epoch: a fresh ``torch.randperm`` from ``generator`` cut into
    ``steps`` batches of ``batch_size`` (the last partial batch dropped).

    This is exactly what the in-memory loops draw at the start of every epoch, from the same
    generator, so a streamed run sees the same minibatches. The permutation is drawn when the
    epoch's first batch is asked for (the workers' prefetch included), before any crop of that
    epoch draws; not at ``iter()``, since a multi-process DataLoader makes two iterators of its
    sampler on its first epoch and advances only the second.
    """

    def __init__(self, n: int, batch_size: int, steps: int, generator: torch.Generator):
        self.n, self.batch_size, self.steps, self.generator = n, batch_size, steps, generator

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=self.generator)
        b = self.batch_size
        for s in range(self.steps):
            yield order[s * b:(s + 1) * b].tolist()

    def __len__(self) -> int:
        return self.steps


class InOrderBatches(Sampler):
    """Consecutive batches of ``batch_size`` over ``range(n)`` (evaluation order; last one short)."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        return iter([list(range(s, min(s + self.batch_size, self.n)))
                     for s in range(0, self.n, self.batch_size)])

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)


def _collate(items):
    for item in items:
        if isinstance(item, _Unreadable):
            return item
    return default_collate(items)


class StreamLoader:
    """Batches ``(uint8 [B, 3, S, S], targets int64 [B])`` of ``dataset`` in the order of
    ``batch_sampler``, decoded by ``num_workers`` worker processes (0: in this process).

    Workers persist across epochs; memory is pinned when ``device`` is CUDA. A file that cannot
    be decoded raises :class:`DataError` naming it. Iterating once is one pass over the sampler.
    """

    def __init__(self, dataset: DecodedImages, batch_sampler: Sampler, num_workers: int = 2,
                 device: torch.device | str = "cpu", prefetch_factor: int = 2):
        workers = max(0, int(num_workers))
        self.loader = DataLoader(
            dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=_collate,
            pin_memory=torch.device(device).type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=prefetch_factor if workers > 0 else None,
            # its own generator for the workers' base seed: drawing it from torch's global one
            # would shift every later global draw (initialisation, dropout) against memory mode
            generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            if isinstance(batch, _Unreadable):
                raise DataError(batch.path, batch.problem)
            yield batch


class StreamedImages:
    """Image files indexed like a uint8 ``[N, 3, size, size]`` tensor, decoded when indexed.

    For loops that draw each minibatch's indices as they go (the pretext pools), where a
    DataLoader cannot know the order ahead: ``images[idx]`` (an index tensor, a list or a slice)
    decodes those images with ``threads`` threads (torchvision's decoder and torch's resize run
    without the GIL) and returns them stacked, equal to the same rows of the decoded array.
    :meth:`subset` is a lazy view, for the held-out part and passes over the whole pool.
    """

    def __init__(self, paths: Sequence[Path | str], size: int, threads: int = 2):
        self._dataset = paths if isinstance(paths, DecodedImages) else DecodedImages(paths, size)
        self.threads = max(1, int(threads))
        self._pool = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, 3, size, size)``, as the decoded array's."""
        return (len(self), 3, self._dataset.size, self._dataset.size)

    def __len__(self) -> int:
        return len(self._dataset)

    def _indices(self, idx) -> list[int]:
        if isinstance(idx, slice):
            return list(range(len(self))[idx])
        return torch.as_tensor(idx, dtype=torch.int64).reshape(-1).tolist()

    def subset(self, idx) -> "StreamedImages":
        """The images at ``idx``, still undecoded."""
        indices = self._indices(idx)
        paths = [self._dataset.path(i) for i in indices]
        return StreamedImages(paths, self._dataset.size, self.threads)

    def __getitem__(self, idx) -> torch.Tensor:
        indices = self._indices(idx)
        if self.threads > 1 and len(indices) > 1:
            from concurrent.futures import ThreadPoolExecutor
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="decode")
            items = list(self._pool.map(self._dataset.__getitem__, indices))
        else:
            items = [self._dataset[i] for i in indices]
        for item in items:
            if isinstance(item, _Unreadable):
                raise DataError(item.path, item.problem)
        size = self._dataset.size
        if not items:
            return torch.empty((0, 3, size, size), dtype=torch.uint8)
        return torch.stack([image for image, _ in items])

    def __del__(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False)
