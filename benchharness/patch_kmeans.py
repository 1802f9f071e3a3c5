"""Filters from data: a layer's input patches, whitened, clustered by k-means (Krahenbuhl,
Doersch, Donahue & Darrell, ICLR 2016, ``magic_init.py -t kmeans``'s ``initializeWeight``).

For one Conv2d / Linear layer with ``k`` output channels:

1. **Patches**: the layer's input cut into receptive-field windows (``torch.nn.functional.unfold``
   with the layer's kernel, stride, padding and dilation; for a Linear layer the input rows),
   ``per_image`` random positions from each image. The tool gathers the same data through
   random projections of the patches (so as not to re-implement Caffe's padding); both give
   the same whitened space.
2. **Whitening** (:class:`Whitening`): mean removed, eigen-decomposition of the covariance, the
   top ``k`` components kept (as the tool: ``ids = argsort(s)[-N_OUT:]``), each scaled by
   ``1 / sqrt(lambda + eps)``; components with ``lambda < floor * lambda_max`` get scale 0.
   Here the ZCA form ``V diag(s) V^T`` (the tool's PCA form ``V diag(s)`` is the same space
   rotated; k-means is rotation invariant). ``eps`` is relative: ``EPS`` (1e-3) times the mean
   kept eigenvalue, the same at any input scale; it damps only components about 1000 times
   weaker than the average one (noise that whitening would blow up, as the epsilon of Coates &
   Ng's ZCA). The tool adds an absolute 1e-3 to the eigenvalues of the unnormalised scatter
   ``D^T D`` of 0-255 pixels, which regularises nothing.
3. **k-means** on the whitened patches scaled to unit length (the tool's ``wD /= norm``):
   scikit-learn's MiniBatchKMeans with ``k`` clusters and batch size ``10 k`` (the tool's).
4. **Un-whitening**: the filter of centroid ``c`` is ``W = c Z`` (``Z`` the ZCA matrix, symmetric),
   so that the filter's response to a raw patch ``x`` is ``c . Z (x - mean)`` plus a constant
   (absorbed by the bias); each filter is then divided by its response's standard deviation on
   the patches (the tool's last line). The within-layer normalisation (std 1, mean ``bias`` per
   channel) follows in :func:`benchharness.rescale.initialise_layers`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

EPS = 1e-3  # relative to the mean kept eigenvalue
FLOOR = 1e-6  # components below FLOOR x the largest eigenvalue are dropped (the tool: s < 1e-6)


@dataclass(frozen=True)
class Whitening:
    """ZCA whitening onto the top components: ``(x - mean) @ matrix``."""

    mean: np.ndarray     # [d]
    basis: np.ndarray    # [d, m] eigenvectors of the kept components
    scale: np.ndarray    # [m] 1 / sqrt(lambda + eps), 0 for dropped components

    @property
    def matrix(self) -> np.ndarray:
        """The ZCA matrix ``V diag(s) V^T`` [d, d] (symmetric)."""
        return (self.basis * self.scale) @ self.basis.T

    @property
    def inverse(self) -> np.ndarray:
        """Its pseudo-inverse ``V diag(1 / s) V^T`` on the kept components (0 elsewhere)."""
        inv = np.divide(1.0, self.scale, out=np.zeros_like(self.scale), where=self.scale > 0)
        return (self.basis * inv) @ self.basis.T

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Rows of ``x`` [n, d] whitened."""
        return (x - self.mean) @ self.matrix


def fit_whitening(patches: np.ndarray, components: int, eps: float = EPS) -> Whitening:
    """The whitening of ``patches`` [n, d] onto its top ``components`` principal components."""
    x = np.asarray(patches, dtype=np.float64)
    mean = x.mean(0)
    centred = x - mean
    values, vectors = np.linalg.eigh(centred.T @ centred / len(x))
    keep = np.argsort(values)[-components:]
    values, vectors = values[keep].clip(min=0), vectors[:, keep]
    alive = values >= FLOOR * max(values.max(), 1e-300)
    regulariser = eps * (values[alive].mean() if alive.any() else 1.0)
    scale = np.where(alive, 1.0 / np.sqrt(values + regulariser), 0.0)
    return Whitening(mean, vectors, scale)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


@dataclass(frozen=True)
class KMeansFilters:
    """The filters [k, d] of one layer (or group), the whitening they were computed in and the
    centroids [k, d] in whitened space."""

    filters: np.ndarray
    whitening: Whitening
    centroids: np.ndarray


def kmeans_filters(patches: np.ndarray, k: int, seed: int = 0, eps: float = EPS) -> KMeansFilters:
    """Steps 2-4 of the module docstring on ``patches`` [n, d]: ``k`` filters from the
    centroids of the whitened, unit-length patches. Needs at least ``k`` patches."""
    from sklearn.cluster import MiniBatchKMeans  # heavy import, only this initialisation needs it

    x = np.asarray(patches, dtype=np.float64)
    if len(x) < k:
        raise ValueError(f"k-means of {k} clusters needs at least {k} patches, got {len(x)}")
    whitening = fit_whitening(x, k, eps)
    white = unit_rows(whitening.apply(x))
    centroids = MiniBatchKMeans(n_clusters=k, batch_size=10 * k, random_state=seed,
                                n_init=3).fit(white).cluster_centers_
    filters = centroids @ whitening.matrix
    std = ((x - whitening.mean) @ filters.T).std(0)
    filters = filters / np.where(std > 0, std, 1.0)[:, None]
    return KMeansFilters(filters, whitening, centroids)


def layer_patches(inputs: torch.Tensor, layer: nn.Module, per_image: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Up to ``per_image`` random receptive-field windows of each input image of ``layer``
    (flattened as the layer's weight is: channel, row, column), as rows [n, d]; for a Linear
    layer, the input rows themselves."""
    if isinstance(layer, nn.Linear):
        return inputs.reshape(len(inputs), -1)
    if not isinstance(layer, nn.Conv2d):
        raise TypeError(f"patches of a {type(layer).__name__} are not defined")
    rows = []
    for start in range(0, len(inputs), 16):  # bounded memory: a few images unfolded at a time
        cols = F.unfold(inputs[start:start + 16], layer.kernel_size, dilation=layer.dilation,
                        padding=layer.padding, stride=layer.stride)  # [b, d, L]
        count = min(per_image, cols.shape[2])
        for image in cols:
            pick = torch.randperm(cols.shape[2], generator=generator)[:count]
            rows.append(image[:, pick].T)
    return torch.cat(rows)


def best_filter_cosine(patches: np.ndarray, filters: np.ndarray, whitening: Whitening) -> float:
    """Mean over ``patches`` [n, d] of the largest cosine between the whitened patch and a
    filter's direction in the whitened space (``Z^+ w``: the filter's response to a patch is
    that direction's dot product with the whitened patch, plus a constant). The spherical
    k-means objective: 1 when every patch lies on some filter's direction."""
    white = unit_rows(whitening.apply(np.asarray(patches, dtype=np.float64)))
    directions = unit_rows(np.asarray(filters, dtype=np.float64) @ whitening.inverse)
    return float((white @ directions.T).max(1).mean())
