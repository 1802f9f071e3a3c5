"""egomotion's targets: the camera's motion between two frames, binned per dimension.

The motion from frame i to frame j is expressed in frame i's camera: the translation
``R(rz_i)^T (t_j - t_i)`` and the rotation ``rz_j - rz_i`` (wrapped to [-180, 180) degrees),
so it does not depend on where the sequence happens to start (pose convention:
:mod:`benchharness.data.synthetic.egomotion`). Each of the three dimensions (tx, ty, rz) is
cut into ``bins`` uniformly spaced bins over ``[-m, m]`` (Agrawal et al.'s uniform bins);
values beyond fall into the end bins.
"""

from __future__ import annotations

import numpy as np

DIMENSIONS = ("tx", "ty", "rz")


def relative_motion(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Motions [N, 3] (tx, ty, rz) from poses ``first`` [N, 3] to poses ``second`` [N, 3], in
    the first pose's camera frame."""
    first, second = np.atleast_2d(first).astype(np.float64), np.atleast_2d(second).astype(np.float64)
    a = np.radians(first[:, 2])
    dx, dy = second[:, 0] - first[:, 0], second[:, 1] - first[:, 1]
    # R(a)^T (dx, dy)
    tx = np.cos(a) * dx + np.sin(a) * dy
    ty = -np.sin(a) * dx + np.cos(a) * dy
    rz = (second[:, 2] - first[:, 2] + 180.0) % 360.0 - 180.0
    return np.stack([tx, ty, rz], axis=1)


def frame_pairs(offsets: np.ndarray, max_gap: int) -> np.ndarray:
    """Every ordered pair (i, j) [P, 2] of global frame indices of one sequence with
    ``1 <= |i - j| <= max_gap`` (sequence s holds frames ``offsets[s]`` .. ``offsets[s + 1] - 1``)."""
    pairs = []
    for start, stop in zip(offsets[:-1], offsets[1:]):
        idx = np.arange(start, stop)
        for gap in range(1, max_gap + 1):
            forward = np.stack([idx[:-gap], idx[gap:]], axis=1) if gap < len(idx) else np.empty((0, 2), int)
            pairs += [forward, forward[:, ::-1]]
    return np.concatenate(pairs).astype(np.int64) if pairs else np.empty((0, 2), np.int64)


def bin_ranges(motions: np.ndarray, quantile: float) -> np.ndarray:
    """Per dimension, the half-width ``m`` of the binned range: the ``quantile`` of |motion|
    (a few outliers then share the end bins instead of stretching every bin)."""
    m = np.quantile(np.abs(motions), quantile, axis=0)
    return np.where(m > 0, m, 1.0)


def bin_edges(ranges: np.ndarray, bins: int) -> np.ndarray:
    """Edges [3, bins + 1]: ``bins`` uniform bins over ``[-m, m]`` for each dimension's ``m``."""
    return np.stack([np.linspace(-m, m, bins + 1) for m in np.asarray(ranges, dtype=np.float64)])


def motion_bins(motions: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin labels [N, 3] (int64, 0 .. bins - 1) of ``motions`` [N, 3]: bin k holds
    ``edges[k] <= v < edges[k + 1]``; values outside the range go to the end bins."""
    motions = np.atleast_2d(motions)
    bins = edges.shape[1] - 1
    labels = [np.clip(np.searchsorted(edges[d], motions[:, d], side="right") - 1, 0, bins - 1)
              for d in range(motions.shape[1])]
    return np.stack(labels, axis=1).astype(np.int64)
