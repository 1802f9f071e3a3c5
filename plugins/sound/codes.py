"""Discrete pretext targets from feature vectors: k-means clusters and PCA binary codes.

Owens et al. 2016 turned each clip's sound-texture statistics into a label to predict from a
frame, in two ways: the index of its k-means cluster (:class:`KMeans`), or a binary code, one
bit per principal component, set when the projection exceeds that component's median
(:class:`BinaryCodes`). Both are fitted on training clips and then applied unchanged to
held-out ones. Plain numpy, seeded: the same data and seed give the same targets.
"""

from __future__ import annotations

import numpy as np


def _squared_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return (np.square(x).sum(1)[:, None] - 2.0 * x @ centres.T + np.square(centres).sum(1)[None]).clip(0)


class KMeans:
    """Lloyd's k-means with k-means++ seeding and ``restarts`` tries (the lowest inertia wins).

    After :meth:`fit`, ``centres`` [k, D] and ``inertia`` (sum of squared distances to the
    nearest centre). A cluster that empties is re-seeded at the point farthest from its centre.
    """

    def __init__(self, k: int, restarts: int = 4, iterations: int = 100, seed: int = 0):
        if k < 1:
            raise ValueError(f"k-means needs at least one cluster, not {k}")
        self.k, self.restarts, self.iterations, self.seed = k, restarts, iterations, seed
        self.centres: np.ndarray | None = None
        self.inertia = float("inf")

    def _seed_centres(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        centres = [x[rng.integers(len(x))]]
        nearest = _squared_distances(x, centres[0][None])[:, 0]
        for _ in range(1, self.k):
            total = nearest.sum()
            index = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
            centres.append(x[index])
            nearest = np.minimum(nearest, _squared_distances(x, x[index][None])[:, 0])
        return np.stack(centres)

    def fit(self, x: np.ndarray) -> "KMeans":
        """Cluster the rows of ``x`` [N, D] (N >= k)."""
        x = np.asarray(x, dtype=np.float64)
        if len(x) < self.k:
            raise ValueError(f"k-means with {self.k} clusters needs at least {self.k} points, got {len(x)}")
        rng = np.random.default_rng(self.seed)
        for _ in range(self.restarts):
            centres = self._seed_centres(x, rng)
            labels = None
            for _ in range(self.iterations):
                distances = _squared_distances(x, centres)
                new = distances.argmin(1)
                if labels is not None and np.array_equal(new, labels):
                    break
                labels = new
                for c in range(self.k):
                    members = labels == c
                    if members.any():
                        centres[c] = x[members].mean(0)
                    else:  # empty cluster: take the point worst served by its centre
                        far = distances[np.arange(len(x)), labels].argmax()
                        centres[c] = x[far]
                        labels[far] = c
            inertia = float(_squared_distances(x, centres).min(1).sum())
            if inertia < self.inertia:
                self.inertia, self.centres = inertia, centres.copy()
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The index of the nearest centre for each row of ``x``: int64 [N]."""
        if self.centres is None:
            raise RuntimeError("KMeans.predict before fit")
        return _squared_distances(np.asarray(x, dtype=np.float64), self.centres).argmin(1).astype(np.int64)


class BinaryCodes:
    """``bits`` principal components of the training features, each thresholded at its median.

    After :meth:`fit`: ``mean`` [D], ``components`` [bits, D] (unit rows, by decreasing
    variance) and ``thresholds`` [bits]; :meth:`encode` gives uint8 codes [N, bits], about half
    ones per bit on the training data.
    """

    def __init__(self, bits: int):
        if bits < 1:
            raise ValueError(f"a binary code needs at least one bit, not {bits}")
        self.bits = bits
        self.mean = self.components = self.thresholds = None

    def fit(self, x: np.ndarray) -> "BinaryCodes":
        """Fit the projection and thresholds on ``x`` [N, D] (bits <= min(N, D))."""
        x = np.asarray(x, dtype=np.float64)
        if self.bits > min(x.shape):
            raise ValueError(f"{self.bits} bits need at least {self.bits} points and dimensions, "
                             f"got {x.shape}")
        self.mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        # a deterministic sign per component: its largest-magnitude loading is positive
        signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
        self.components = (vt * signs[:, None])[: self.bits]
        self.thresholds = np.median(self.project(x), axis=0)
        return self

    def project(self, x: np.ndarray) -> np.ndarray:
        """The principal-component scores of ``x``: [N, bits]."""
        if self.components is None:
            raise RuntimeError("BinaryCodes used before fit")
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.components.T

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Binary codes of ``x``: uint8 [N, bits]."""
        return (self.project(x) > self.thresholds).astype(np.uint8)
