"""The context encoder's masks and its masked reconstruction loss (Pathak et al. 2016).

Masks are the paper's "random block" kind: square blocks of random side and position, possibly
overlapping, are added to an image's mask until it covers ``coverage`` (a quarter) of the image
(the last block may take it a little past). The paper's feature-learning runs used its
"random region" kind instead (shapes cut from PASCAL VOC 2012 segmentation masks); the pretext
pool here has no segmentation masks of its own, so the blocks stand in for them.
"""

from __future__ import annotations

import torch


def random_block_masks(n: int, size: int, generator: torch.Generator, coverage: float = 0.25,
                       block: tuple[float, float] = (0.125, 0.375)) -> torch.Tensor:
    """``n`` masks [n, 1, size, size] (1 = removed) of random blocks covering at least ``coverage``
    of each image; a block's side is drawn uniformly in ``block`` (fractions of ``size``)."""
    if not 0 < coverage < 1:
        raise ValueError(f"inpainting: mask coverage must be in (0, 1), not {coverage!r}")
    lo, hi = (max(1, round(f * size)) for f in block)
    if not 1 <= lo <= hi <= size:
        raise ValueError(f"inpainting: block sides {block} of {size} pixels give no valid block")
    masks = torch.zeros(n, 1, size, size)
    need = coverage * size * size
    for i in range(n):
        m = masks[i, 0]
        while m.sum() < need:
            side = int(torch.randint(lo, hi + 1, (1,), generator=generator))
            y, x = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=generator))
            m[y:y + side, x:x + side] = 1
    return masks


def mask_input(x: torch.Tensor, masks: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """The encoder's input: ``x`` with the masked pixels replaced by ``fill`` (one value per
    channel: the paper fills them with the data's mean colour)."""
    return x * (1 - masks) + fill.view(1, -1, 1, 1) * masks


def masked_l2(prediction: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Squared error over the masked pixels only, averaged per masked pixel and channel: the
    paper's L_rec = ||M * (x - F((1 - M) * x))||^2, normalised by the masked area so that its
    scale does not depend on the mask's size. Unmasked pixels of ``prediction`` do not count."""
    weight = masks.expand_as(target)
    return ((prediction - target) ** 2 * weight).sum() / weight.sum().clamp_min(1)
