"""A labelled ``<class>/<image>`` tree as minibatches, decoded in memory or streamed from disk.

Training loops ask for the epoch's minibatches and for the tree in order (evaluation); whether
the pixels come from one decoded array or from DataLoader workers is the ``data`` setting's
business (:func:`~benchharness.data.loading.streaming.choose_data_mode`), not the loop's. Both draw the
same minibatches from the loop's generator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from .folders import list_image_folder, load_image_folder
from .streaming import DecodedImages, EpochBatches, InOrderBatches, StreamLoader, choose_data_mode


class LabelledImages:
    """The images of a labelled tree at ``size`` pixels, in memory or streamed (``mode``).

    ``targets`` (int64 [N]) and ``classes`` are always in memory; pixels arrive in batches of
    ``(uint8 [B, 3, size, size], int64 [B])``.
    """

    def __init__(self, root: Path | str, size: int, setting: str = "auto", num_workers: int = 2,
                 device: torch.device | str = "cpu", progress=None, log=None, what: str = ""):
        self.root = Path(root)
        paths, targets, self.classes = list_image_folder(self.root)
        self.targets = torch.tensor(targets, dtype=torch.int64)
        self.mode = choose_data_mode(setting, len(paths), size, what or f"{self.root}", log)
        self.num_workers, self.device = num_workers, device
        self._images = None
        self._dataset = None
        if self.mode == "memory":
            self._images, _, _ = load_image_folder(self.root, size, progress)
        else:
            self._dataset = DecodedImages(paths, size, targets)

    def __len__(self) -> int:
        return len(self.targets)

    def epoch_batches(self, batch_size: int, steps: int, generator: torch.Generator) -> Iterable:
        """An iterable to run once per epoch: ``steps`` minibatches of a fresh permutation drawn
        from ``generator`` when the epoch starts (:class:`EpochBatches`)."""
        sampler = EpochBatches(len(self), batch_size, steps, generator)
        if self._images is not None:
            return _InMemory(self._images, self.targets, sampler)
        return StreamLoader(self._dataset, sampler, self.num_workers, self.device)

    def in_order(self, batch_size: int) -> Iterable:
        """Every image once, in order, in batches of ``batch_size``."""
        sampler = InOrderBatches(len(self), batch_size)
        if self._images is not None:
            return _InMemory(self._images, self.targets, sampler)
        return StreamLoader(self._dataset, sampler, self.num_workers, self.device)


class _InMemory:
    """The batches of ``sampler`` indexed out of arrays already in memory."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, sampler):
        self.images, self.targets, self.sampler = images, targets, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for idx in self.sampler:
            idx = torch.as_tensor(idx, dtype=torch.int64)
            yield self.images[idx], self.targets[idx]
