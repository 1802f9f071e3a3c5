"""One stage's output for every image of a folder (``benchharness features``): for probes,
retrieval, t-SNE, or checking a converted model against Caffe.

Rows follow the sorted file names. An image already at the backbone's input size enters the
network unchanged; any other image goes through the test transform of Caffe's reference
pipeline: resized to 256 x 256 (``input_size * 256 / 227``) and centre-cropped to the input size.
Conv stages are read after their ReLU (with their pool and LRN where the stage has them); fc6
and fc7 after their ReLU, with dropout off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.datasets.folder import IMG_EXTENSIONS

from .backbones import STAGES
from .data.loading.transforms import resize_square
from .data.voc.devkit import load_image
from .interfaces import DataError
from .representation import Representation


def image_files(directory: Path) -> list[Path]:
    """The image files directly under ``directory``, sorted by file name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(directory, "not a folder of images")
    paths = sorted((p for p in directory.iterdir() if p.suffix.lower() in IMG_EXTENSIONS),
                   key=lambda p: p.name)
    if not paths:
        raise DataError(directory, f"no image files ({', '.join(IMG_EXTENSIONS)})")
    return paths


def test_view(image: torch.Tensor, input_size: int) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [3, input_size, input_size]: unchanged at the input size, else
    resized to ``round(input_size * 256 / 227)`` square and centre-cropped."""
    if image.shape[-2:] == (input_size, input_size):
        return image
    store = round(input_size * 256 / 227)
    resized = resize_square(image, store)
    o = (store - input_size) // 2
    return resized[:, o:o + input_size, o:o + input_size]


@torch.no_grad()
def extract(rep: Representation, paths: list[Path], layer: str, device: torch.device,
            batch_size: int = 32, progress=None) -> np.ndarray:
    """float32 [len(paths), D]: the flattened output of stage ``layer`` for each image."""
    if layer not in STAGES:
        raise DataError(layer, f"unknown stage; stages are {', '.join(STAGES)}")
    size = rep.network.spec.input_size
    network = rep.network.to(device).eval()
    rows = []
    chunks = range(0, len(paths), batch_size)
    for start in (progress(chunks, desc=f"features {layer}", leave=False) if progress else chunks):
        batch = torch.stack([test_view(load_image(p), size) for p in paths[start:start + batch_size]])
        x = rep.input.normalise(batch.to(device).float() / 255.0)
        rows.append(network.forward_to(x, layer).flatten(1).float().cpu())
    return torch.cat(rows).numpy()
