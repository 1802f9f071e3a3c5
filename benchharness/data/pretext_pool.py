"""The unlabelled image pool a self-supervised method pretrains on, with a held-out part.

By default: the images of the labelled source set (labels ignored; the ImageNet stand-in) plus
the unlabelled pool of a data root. A method's ``image_dirs`` setting replaces them with any
list of folders, each either a flat folder of images or a ``<class>/<image>`` tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS

from ..interfaces import DataError
from .datasets import locate_source, locate_unlabelled
from .folders import load_image_folder, load_image_pool


def default_image_dirs(data_root: Path) -> list[Path]:
    """The source set's train folder and the unlabelled pool of ``data_root``."""
    return [locate_source(data_root), locate_unlabelled(data_root)]


def load_images(dirs: Sequence[Path | str], size: int, progress=None) -> torch.Tensor:
    """Every image of ``dirs`` resized to ``size`` x ``size``: uint8 [N, 3, size, size]."""
    batches = []
    for directory in map(Path, dirs):
        if not directory.is_dir():
            raise DataError(directory, "image folder not found")
        flat = any(p.suffix.lower() in IMG_EXTENSIONS for p in directory.iterdir())
        if flat:
            batches.append(load_image_pool(directory, size, progress))
        else:
            batches.append(load_image_folder(directory, size, progress)[0])
    return torch.cat(batches)


def split_held_out(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of ``range(n)`` into (train, held-out) indices, held-out ~``fraction``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = max(1, round(n * fraction)) if fraction > 0 else 0
    if held >= n:
        raise ValueError(f"held-out fraction {fraction} leaves no training images out of {n}")
    return order[held:].sort().values, order[:held].sort().values
