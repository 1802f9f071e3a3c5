"""Folders of images loaded into memory as uint8 tensors (labelled ImageFolder trees and pools)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from ..interfaces import DataError
from .image_cache import decode_resized


def load_image_folder(root: Path, size: int, progress=None, max_images: int = 200_000):
    """Every image of a ``<class>/<image>`` tree, resized to ``size`` x ``size``.

    Returns ``(images uint8 [N, 3, size, size], targets int64 [N], class_names)``. Refuses trees
    larger than ``max_images`` (they do not fit in memory; stream them instead).
    """
    root = Path(root)
    try:
        folder = ImageFolder(str(root), loader=lambda p: p)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(root, f"not a readable <class>/<image> folder tree ({exc})") from None
    if len(folder.samples) > max_images:
        raise DataError(root, f"{len(folder.samples)} images exceed max_images={max_images} for "
                              "in-memory pretraining")
    targets = torch.tensor([t for _, t in folder.samples], dtype=torch.int64)
    images = decode_resized([Path(p) for p, _ in folder.samples], size, progress, f"load {root.name}")
    return images, targets, list(folder.classes)


def load_image_pool(root: Path, size: int, progress=None, limit: int | None = None) -> torch.Tensor:
    """The images directly under ``root`` (sorted by name), resized; uint8 [N, 3, size, size]."""
    root = Path(root)
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)[:limit]
    if not paths:
        raise DataError(root, "no images found")
    return decode_resized(paths, size, progress, f"load {root.name}")
