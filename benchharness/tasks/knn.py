"""k-nearest-neighbour classification on one frozen stage: the ``knn-<stage>`` protocols.

Nothing trains. Every image of the training and the test split goes once through the frozen
trunk (one centre crop, :mod:`~benchharness.tasks.stage_features`, cached); each test image's
``k`` nearest training images by cosine similarity of that stage's flattened output then vote
for their classes: with weight 1 (``uniform``) or with their similarity (``similarity``). A
class's score is the sum of the votes of the neighbours that carry it, so

- single-label (``source-cls``): the predicted class is the one with the largest score; with
  ``k = 1``, the nearest neighbour's class (the 1-NN of Table 5.1);
- multi-label (``voc07-cls``): each class's score ranks the test images for that class's AP; a
  neighbour votes for each class it is labelled positive for (a 'difficult' label votes for
  nothing).

The protocol names are ``knn-`` and a stage name of :data:`~benchharness.backbones.STAGES`
(``knn-conv1`` .. ``knn-fc7``), so a layer-wise view sorts them by the stage after the prefix.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..backbones import STAGES

KNN_PREFIX = "knn-"
KNN_PROTOCOLS = tuple(KNN_PREFIX + stage for stage in STAGES)
WEIGHTINGS = ("similarity", "uniform")


def knn_stage(protocol: str) -> str:
    """The stage a ``knn-<stage>`` protocol reads (``knn-fc7`` -> ``fc7``)."""
    if protocol not in KNN_PROTOCOLS:
        raise ValueError(f"{protocol!r} is not a k-NN protocol; they are {KNN_PROTOCOLS}")
    return protocol.removeprefix(KNN_PREFIX)


def check_knn_settings(task: str, k: int, weighting: str) -> None:
    """A clear error for a ``knn_k`` below 1 or an unknown ``knn_weighting``."""
    if k < 1:
        raise ValueError(f"{task}: knn_k must be at least 1, got {k}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"{task}: unknown knn_weighting {weighting!r}; choose from {WEIGHTINGS}")


@torch.no_grad()
def cosine_neighbours(train, test, k: int, chunk: int = 16384, block: int = 2048,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` training rows most cosine-similar to each test row: ``(similarity [M, k],
    index [M, k])``, most similar first.

    ``train`` [N, D] may be a memory-mapped array larger than memory: it is read once, ``chunk``
    rows at a time, against ``block`` test rows at a time, keeping a running top-k per test row
    (so memory holds ``chunk x block`` similarities, not ``N x M``). A zero row has similarity 0
    to everything. ``k`` outside 1..N is an error.
    """
    n = len(train)
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} nearest neighbours asked among {n} training images")
    queries = F.normalize(torch.from_numpy(np.array(test, dtype=np.float32)), dim=1).to(device)
    best_sim = torch.full((len(queries), k), -torch.inf, device=device)
    best_idx = torch.full((len(queries), k), -1, dtype=torch.int64, device=device)
    for start in range(0, n, chunk):
        rows = F.normalize(torch.from_numpy(np.array(train[start:start + chunk], dtype=np.float32)),
                           dim=1).to(device)
        ids = torch.arange(start, start + len(rows), device=device)
        for q in range(0, len(queries), block):
            part = slice(q, q + block)
            sims = torch.cat([best_sim[part], queries[part] @ rows.T], dim=1)
            candidates = torch.cat([best_idx[part], ids.expand(len(sims), -1)], dim=1)
            best_sim[part], pos = sims.topk(k, dim=1)
            best_idx[part] = candidates.gather(1, pos)
    return best_sim.cpu(), best_idx.cpu()


def neighbour_votes(similarity: torch.Tensor, index: torch.Tensor, train_labels,
                    n_classes: int, weighting: str) -> np.ndarray:
    """Class scores [M, C] from the neighbours of :func:`cosine_neighbours`.

    ``train_labels`` is either the training images' class indices (int [N], single-label) or
    their 0/1 label matrix ([N, C], multi-label: 1 where an image is positive for a class).
    Each neighbour adds its weight (1, or its similarity) to the classes it is labelled with.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose from {WEIGHTINGS}")
    weight = similarity.double() if weighting == "similarity" else torch.ones_like(similarity, dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(train_labels))
    if labels.dim() == 1:
        scores = torch.zeros((len(index), n_classes), dtype=torch.float64)
        scores.scatter_add_(1, labels[index], weight)
    else:
        scores = (weight.unsqueeze(-1) * labels.double()[index]).sum(1)
    return scores.numpy()


def knn_scores(train_features, train_labels, test_features, n_classes: int, k: int,
               weighting: str, device: torch.device | str = "cpu") -> np.ndarray:
    """Class scores [M, C] of the test rows by the votes of their ``k`` cosine-nearest
    training rows (:func:`cosine_neighbours`, :func:`neighbour_votes`)."""
    similarity, index = cosine_neighbours(train_features, test_features, k, device=device)
    return neighbour_votes(similarity, index, train_labels, n_classes, weighting)
