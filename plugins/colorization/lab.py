"""CIE Lab colour and the quantised ab space of colorization (Zhang, Isola, Efros 2016).

- :func:`rgb_to_lab`: sRGB in [0, 1] to L*a*b* (D65), with L computed exactly as
  :meth:`benchharness.representation.InputConvention.normalise` computes it for ``lab-l`` input.
- :func:`in_gamut_bins`: the centres of the ab grid cells (grid size 10) that sRGB colours hit.
- :class:`ABQuantizer`: hard bins, soft encoding (Gaussian over the nearest bins) and the
  class-rebalancing weights derived from an empirical prior.
"""

from __future__ import annotations

from functools import lru_cache

import torch

_D = 6 / 29
_WHITE_X, _WHITE_Z = 0.95047, 1.08883  # D65 reference white (Y = 1)


def _lab_f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _D ** 3, t.clamp_min(1e-12).pow(1 / 3), t / (3 * _D ** 2) + 4 / 29)


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """Float sRGB in [0, 1], shape [N, 3, H, W], to Lab [N, 3, H, W] (L in 0..100, a and b).

    L follows the same operations as ``InputConvention("lab-l").normalise`` so that a network
    trained on this L sees identical input at transfer time.
    """
    lin = torch.where(images <= 0.04045, images / 12.92, ((images + 0.055) / 1.055) ** 2.4)
    r, g, b = lin[:, 0], lin[:, 1], lin[:, 2]
    y = (0.2126 * r + 0.7152 * g + 0.0722 * b).clamp_min(0)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b).clamp_min(0) / _WHITE_X
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b).clamp_min(0) / _WHITE_Z
    fx, fy, fz = _lab_f(x), _lab_f(y), _lab_f(z)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


@lru_cache(maxsize=4)
def in_gamut_bins(grid: float = 10.0, surface_levels: int = 256, interior_levels: int = 32) -> torch.Tensor:
    """Centres (a, b) [Q, 2] of the ab grid cells hit by sRGB colours, sorted by (a, b).

    A colour hits the cell whose centre (a multiple of ``grid``) is nearest. The sample is the
    RGB cube's surface at ``surface_levels`` per edge (where the gamut's extremes lie) plus its
    interior at ``interior_levels``; for grid 10 this gives Q = 261 (the paper reports 313).
    """
    v = torch.linspace(0, 1, surface_levels, dtype=torch.float64)
    uv = torch.cartesian_prod(v, v)
    samples = []
    for axis in range(3):
        for value in (0.0, 1.0):
            cols = [uv[:, 0], uv[:, 1]]
            cols.insert(axis, torch.full((len(uv),), value, dtype=torch.float64))
            samples.append(torch.stack(cols, dim=1))
    w = torch.linspace(0, 1, interior_levels, dtype=torch.float64)
    samples.append(torch.cartesian_prod(w, w, w))
    rgb = torch.cat(samples).T[None, :, :, None]  # [1, 3, P, 1]
    ab = rgb_to_lab(rgb)[0, 1:, :, 0].T  # [P, 2]
    cells = torch.unique(torch.round(ab / grid).long(), dim=0)  # sorted lexicographically
    return (cells * grid).float()


class ABQuantizer:
    """Maps ab values to the Q in-gamut bins: hard indices, soft targets, rebalancing weights."""

    def __init__(self, centres: torch.Tensor | None = None, grid: float = 10.0):
        self.grid = grid
        self.centres = (in_gamut_bins(grid) if centres is None else centres).float()

    @property
    def q(self) -> int:
        """The number of bins."""
        return len(self.centres)

    def _distances(self, ab: torch.Tensor) -> torch.Tensor:
        """ab [N, 2, H, W] -> squared distances to every centre [N, H, W, Q]."""
        pts = ab.permute(0, 2, 3, 1)
        return (pts[..., None, :] - self.centres.to(ab)).pow(2).sum(-1)

    def encode(self, ab: torch.Tensor) -> torch.Tensor:
        """Index [N, H, W] of the nearest bin centre of each ab value [N, 2, H, W]."""
        return self._distances(ab).argmin(-1)

    def decode(self, index: torch.Tensor) -> torch.Tensor:
        """Bin indices [...] -> their centres [..., 2]."""
        return self.centres.to(index.device)[index]

    def soft_encode(self, ab: torch.Tensor, neighbours: int = 5, sigma: float = 5.0) -> torch.Tensor:
        """Soft targets [N, Q, H, W]: Gaussian weights (``sigma``) on the ``neighbours`` nearest
        bins of each ab value, normalised to sum to 1 (the paper's soft-encoding scheme)."""
        d2, idx = self._distances(ab).topk(neighbours, dim=-1, largest=False)
        weights = torch.softmax(-d2 / (2 * sigma ** 2), dim=-1)  # normalised Gaussian
        out = torch.zeros(*idx.shape[:-1], self.q, dtype=ab.dtype, device=ab.device)
        out.scatter_(-1, idx, weights)
        return out.permute(0, 3, 1, 2)

    def smooth(self, prior: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
        """A distribution over bins convolved with a Gaussian (``sigma`` in ab units), renormalised."""
        c = self.centres.to(prior)
        kernel = torch.exp(-(c[:, None] - c[None]).pow(2).sum(-1) / (2 * sigma ** 2))
        smoothed = kernel @ prior
        return smoothed / smoothed.sum()

    def rebalance_weights(self, prior: torch.Tensor, lam: float = 0.5, sigma: float = 5.0) -> torch.Tensor:
        """Per-bin loss weights w proportional to ((1 - lam) p~ + lam / Q)^-1 with
        E_{p~}[w] = 1, where p~ is ``prior`` smoothed by :meth:`smooth` (sigma 0: unsmoothed)."""
        p = prior / prior.sum()
        p = self.smooth(p, sigma) if sigma > 0 else p
        w = 1.0 / ((1 - lam) * p + lam / self.q)
        return w / (p * w).sum()
