"""Folders of images loaded into memory as uint8 tensors (labelled ImageFolder trees and pools)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from ...interfaces import DataError
from .image_cache import decode_resized


MAX_IN_MEMORY_IMAGES = 200_000
"""The most images :func:`load_image_folder` decodes into memory; larger trees are streamed."""


def list_image_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """The files of a ``<class>/<image>`` tree without reading them: (paths, targets, class names),
    in :class:`torchvision.datasets.ImageFolder`'s order (classes and files sorted by name)."""
    root = Path(root)
    try:
        folder = ImageFolder(str(root), loader=lambda p: p)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(root, f"not a readable <class>/<image> folder tree ({exc})") from None
    return [Path(p) for p, _ in folder.samples], [t for _, t in folder.samples], list(folder.classes)


def load_image_folder(root: Path, size: int, progress=None, max_images: int | None = None):
    """Every image of a ``<class>/<image>`` tree, resized to ``size`` x ``size``.

    Returns ``(images uint8 [N, 3, size, size], targets int64 [N], class_names)``. Refuses trees
    larger than ``max_images`` (default :data:`MAX_IN_MEMORY_IMAGES`): they do not fit in memory
    and are streamed instead (``data = "stream"``, :mod:`benchharness.data.loading.streaming`).
    """
    root = Path(root)
    limit = MAX_IN_MEMORY_IMAGES if max_images is None else max_images
    paths, targets, classes = list_image_folder(root)
    if len(paths) > limit:
        raise DataError(root, f"{len(paths)} images exceed the in-memory limit of {limit}; "
                              'stream them from disk instead: set data = "stream" (or "auto") '
                              "in the method's suite section")
    images = decode_resized(paths, size, progress, f"load {root.name}")
    return images, torch.tensor(targets, dtype=torch.int64), classes


def list_image_pool(root: Path, limit: int | None = None) -> list[Path]:
    """The images directly under ``root``, sorted by name (the first ``limit``)."""
    root = Path(root)
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)[:limit]
    if not paths:
        raise DataError(root, "no images found")
    return paths


def load_image_pool(root: Path, size: int, progress=None, limit: int | None = None) -> torch.Tensor:
    """The images directly under ``root`` (sorted by name), resized; uint8 [N, 3, size, size]."""
    root = Path(root)
    return decode_resized(list_image_pool(root, limit), size, progress, f"load {root.name}")
