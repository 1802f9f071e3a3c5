"""Patch pairs for context prediction (Doersch, Gupta, Efros 2015).

A 3 x 3 grid of ``patch`` x ``patch`` cells separated by ``gap`` pixels is laid at a random place
in an image; the first patch is the centre cell, the second one of its 8 neighbours, and each
patch is moved by up to ``jitter`` pixels in x and y. The label is the neighbour's position,
numbered row by row (the centre skipped)::

    0 1 2
    3 . 4
    5 6 7
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEIGHBOUR_OFFSETS: tuple[tuple[int, int], ...] = tuple(
    (dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
"""(row, column) offset of each neighbour label 0..7 relative to the centre cell."""


def offset_of_label(label: int) -> tuple[int, int]:
    """The (dy, dx) grid offset of neighbour ``label`` (0..7)."""
    return NEIGHBOUR_OFFSETS[label]


def label_of_offset(dy: int, dx: int) -> int:
    """The neighbour label of grid offset (dy, dx), each in {-1, 0, 1}, not both 0."""
    return NEIGHBOUR_OFFSETS.index((dy, dx))


@dataclass(frozen=True)
class PatchGrid:
    """Geometry of the 3 x 3 grid: cell side, gap between cells, jitter of each patch (pixels)."""

    patch: int
    gap: int
    jitter: int

    def __post_init__(self):
        if self.patch < 1 or self.gap < 0 or self.jitter < 0:
            raise ValueError(f"bad patch grid {self}: patch >= 1, gap >= 0, jitter >= 0")
        if 4 * self.jitter >= self.pitch:  # else a jittered pair could look like another offset
            raise ValueError(f"bad patch grid {self}: jitter must be below (patch + gap) / 4")

    @property
    def pitch(self) -> int:
        """Distance between the top-left corners of adjacent cells."""
        return self.patch + self.gap

    @property
    def span(self) -> int:
        """The smallest image side that holds the grid with room for the jitter."""
        return 3 * self.patch + 2 * self.gap + 2 * self.jitter

    def sample(self, n: int, side: int, generator: torch.Generator, per_centre: int = 1):
        """``n`` random grids in a ``side`` x ``side`` image, ``per_centre`` distinct neighbours each.

        Returns ``(centre_boxes [n, 4], neighbour_boxes [n, k, 4], labels [n, k])`` with boxes
        as (x1, y1, x2, y2) in pixels (integer-valued, ``patch`` wide) and int64 labels; every
        patch, the centre included, has its own jitter.
        """
        if side < self.span:
            raise ValueError(f"a {side}-pixel image cannot hold a grid of span {self.span} "
                             f"(patch {self.patch}, gap {self.gap}, jitter {self.jitter})")
        if not 1 <= per_centre <= 8:
            raise ValueError(f"per_centre must be in 1..8, not {per_centre}")
        j, k = self.jitter, per_centre
        origin = torch.randint(j, side - (self.span - j) + 1, (n, 1, 2), generator=generator)
        labels = torch.rand(n, 8, generator=generator).argsort(1)[:, :k]  # k distinct neighbours
        offsets = torch.tensor(NEIGHBOUR_OFFSETS)[labels]  # [n, k, 2] as (dy, dx)
        centre = origin + self.pitch + torch.randint(-j, j + 1, (n, 1, 2), generator=generator)
        other = origin + (1 + offsets) * self.pitch + torch.randint(-j, j + 1, (n, k, 2),
                                                                    generator=generator)

        def boxes(top_left):  # (..., (y, x)) -> (..., (x1, y1, x2, y2))
            y, x = top_left[..., 0].float(), top_left[..., 1].float()
            return torch.stack([x, y, x + self.patch, y + self.patch], dim=-1)

        return boxes(centre)[:, 0], boxes(other), labels


def labels_from_boxes(centre: torch.Tensor, other: torch.Tensor, grid: PatchGrid) -> torch.Tensor:
    """Recover the neighbour labels of boxes [n, 4] relative to centre boxes [n, 4]."""
    step = torch.round((other[:, :2] - centre[:, :2]) / grid.pitch).long()  # (dx, dy)
    table = {offset: k for k, offset in enumerate(NEIGHBOUR_OFFSETS)}
    return torch.tensor([table[(int(dy), int(dx))] for dx, dy in step.tolist()], dtype=torch.int64)
