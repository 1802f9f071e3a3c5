"""Folders of images loaded into memory as uint8 tensors (labelled ImageFolder trees and pools)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from ..interfaces import DataError
from .transforms import resize_square
from .voc import load_image


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
    images = torch.empty((len(folder.samples), 3, size, size), dtype=torch.uint8)
    targets = torch.tensor([t for _, t in folder.samples], dtype=torch.int64)
    samples = folder.samples if progress is None else progress(folder.samples, desc=f"load {root.name}",
                                                                leave=False)
    for i, (path, _) in enumerate(samples):
        images[i] = resize_square(load_image(Path(path)), size)
    return images, targets, list(folder.classes)


def load_image_pool(root: Path, size: int, progress=None, limit: int | None = None) -> torch.Tensor:
    """The images directly under ``root`` (sorted by name), resized; uint8 [N, 3, size, size]."""
    root = Path(root)
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)[:limit]
    if not paths:
        raise DataError(root, "no images found")
    images = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths if progress is None else progress(paths, desc=f"load {root.name}",
                                                                      leave=False)):
        images[i] = resize_square(load_image(path), size)
    return images
