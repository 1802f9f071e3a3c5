"""Whole images of different sizes as one network-ready batch (detection and segmentation).

Each image is converted to the representation's input convention on its own and placed at the
top-left of the batch; the rest is zero, which in the normalised input is the convention's mean
(as Caffe's Fast R-CNN and FCN pad mean-subtracted images), so padding looks like a flat,
average-coloured border rather than black.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ..representation import InputConvention


def normalised_batch(images: Sequence[torch.Tensor], convention: InputConvention, device: torch.device,
                     sizes: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """uint8 images ``[3, h, w]`` -> float ``[B, C, H, W]`` in the input convention, zero-padded
    at the bottom and right to the largest. ``sizes`` resizes image ``k`` to ``sizes[k]``
    (height, width) first, on ``device`` (antialiased bilinear)."""
    shapes = list(sizes) if sizes is not None else [tuple(im.shape[-2:]) for im in images]
    height = max(h for h, _ in shapes)
    width = max(w for _, w in shapes)
    batch = None
    for k, (image, (h, w)) in enumerate(zip(images, shapes)):
        x = image.to(device, non_blocking=True).float()
        if tuple(x.shape[-2:]) != (h, w):
            x = TF.resize(x, [h, w], antialias=True).clamp(0, 255)
        x = convention.normalise(x[None] / 255)[0]
        if batch is None:
            batch = torch.zeros(len(shapes), x.shape[0], height, width, device=device)
        batch[k, :, :h, :w] = x
    return batch


def pad_to(batch: torch.Tensor, height: int, width: int, value: float = 0.0) -> torch.Tensor:
    """``batch`` (``[..., h, w]``) padded at the bottom and right to ``height`` x ``width``.

    A data-parallel rank pads its share of a minibatch as the whole minibatch would be: the
    networks' outputs near an image's bottom and right borders depend on how far the padding
    reaches (pooled cells that exist only over padding, RoI pooling, FCN's upsampling)."""
    return F.pad(batch, (0, width - batch.shape[-1], 0, height - batch.shape[-2]), value=value)
