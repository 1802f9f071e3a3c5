"""Decoded images cached on disk as one uint8 array per (split, size), memory-mapped on reuse.

JPEG decoding and resizing dominate data time when every job of a grid reads the same split. The
first job decodes and stores ``[N, 3, S, S]`` uint8 in a ``.npy`` file (atomically); later jobs,
seeds and processes map it in without decoding anything.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ... import atomic
from ..voc.devkit import load_image
from .transforms import resize_square


def decode_resized(paths: Sequence[Path], size: int, progress=None, desc: str = "decode") -> torch.Tensor:
    """Decode every image and resize it to ``size`` x ``size``: uint8 [N, 3, size, size]."""
    images = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    iterator = progress(paths, desc=desc, leave=False) if progress else paths
    for i, path in enumerate(iterator):
        images[i] = resize_square(load_image(path), size)
    return images


def cached_images(cache_file: Path | None, decode: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
    """The array in ``cache_file`` (memory-mapped), or ``decode()`` stored there; (images, was_cached)."""
    if cache_file is not None and cache_file.is_file():
        try:
            array = np.load(cache_file, mmap_mode="c")  # copy-on-write: writable, file untouched
            return torch.from_numpy(np.asarray(array)), True
        except (ValueError, OSError):  # torn or foreign file: decode again and overwrite
            pass
    images = decode()
    if cache_file is not None:
        buffer = io.BytesIO()
        np.save(buffer, images.numpy())
        atomic.write_bytes(cache_file, buffer.getvalue())
    return images, False
