"""Per-class linear SVMs on frozen features, the cost C of each chosen by cross-validation.

The linear-SVM transfer of DeCAF and Owens et al. (2016), done as Goyal et al. 2019's
``tools/svm/train_svm_kfold.py`` does it: for every class and every cost of the grid, k-fold
cross-validation on the training split scored by average precision (scikit-learn's
``average_precision_score``, the scoring Goyal et al. use); each class keeps the cost with the
best mean AP over the folds (the smallest such cost on a tie), is refitted on the whole training
split with it, and scores the test split with its decision values.

VOC labels: 1 present, -1 absent, 0 difficult; difficult images are left out of a class's
training and scoring. Positives weigh ``positive_weight`` times a negative in the hinge loss
(Goyal et al.'s ``class_weight={1: 2, -1: 1}``). The folds are one seeded shuffled split of the
images shared by every class (Goyal et al. stratify per class, unshuffled), so that the torch
solver fits every class and cost of a fold together; a fold counts for a class when its
training part holds both labels and its held-out part a positive and a negative.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from sklearn.model_selection import KFold

from . import linear_svm


@dataclass
class ProbeFit:
    """The probe's outcome: test ``scores`` [m, K]; the sorted cost grid ``costs`` [G]; the mean
    held-out AP per class and cost ``cv_ap`` [K, G] (NaN where no fold counted); the ``chosen``
    cost per class [K]; the folds that counted per class ``folds_scored`` [K]; and how many of
    all the fits did not reach their solver's tolerance (``unconverged``, of ``fits``)."""

    scores: np.ndarray
    costs: np.ndarray
    cv_ap: np.ndarray
    chosen: np.ndarray
    folds_scored: np.ndarray
    unconverged: int
    fits: int


def check_grid(costs, folds: int) -> np.ndarray:
    """The cost grid sorted, as floats; a ValueError naming the problem when it is empty, holds a
    cost <= 0, or ``folds`` is below 2."""
    grid = np.unique(np.asarray(list(costs), dtype=np.float64))
    if grid.size == 0 or np.any(grid <= 0) or not np.all(np.isfinite(grid)):
        raise ValueError(f"probe costs must be a non-empty list of positive numbers, got {list(costs)}")
    if int(folds) < 2:
        raise ValueError(f"probe folds must be at least 2, got {folds}")
    return grid


def _problems(labels: np.ndarray, n_costs: int, positive_weight: float):
    """Labels (+-1) and cost multipliers for every (class, cost) pair, class-major: [n, K * G]."""
    y = np.where(labels > 0, 1.0, -1.0)
    weight = np.where(labels > 0, positive_weight, 1.0) * (labels != 0)
    return np.repeat(y, n_costs, axis=1), np.repeat(weight, n_costs, axis=1)


def _held_out_ap(decision: np.ndarray, labels: np.ndarray, trainable: np.ndarray, n_costs: int) -> np.ndarray:
    """AP [K, G] of held-out decision values [m, K * G]; NaN where it does not count."""
    k = labels.shape[1]
    ap = np.full((k, n_costs), np.nan)
    for c in range(k):
        keep = labels[:, c] != 0
        truth = labels[keep, c] > 0
        if not trainable[c] or truth.all() or not truth.any():
            continue
        for g in range(n_costs):
            ap[c, g] = average_precision_score(truth, decision[keep, c * n_costs + g])
    return ap


def fit_probe(train_x: np.ndarray, train_labels: np.ndarray, test_x: np.ndarray, costs, folds: int,
              seed: int, solver: str, positive_weight: float = 2.0, device: torch.device | None = None,
              tol: float = 1e-4, max_iter: int = 2000) -> ProbeFit:
    """Choose each class's cost by ``folds``-fold cross-validation on (``train_x``,
    ``train_labels``), refit on all of it and score ``test_x`` (see the module docstring).

    ``train_labels`` are VOC labels [n, K]; ``solver`` is one of
    :data:`~benchharness.tasks.linear_svm.SOLVERS`. A class with no counted fold takes the
    middle cost of the grid (``folds_scored`` says 0 there).
    """
    grid = check_grid(costs, folds)
    labels = np.asarray(train_labels)
    n, k = labels.shape
    if n < folds:
        raise ValueError(f"probe: {n} training images cannot make {folds} folds")
    g = grid.size
    y, weight = _problems(labels, g, positive_weight)
    tiled = np.tile(grid, k)
    ap = np.full((folds, k, g), np.nan)
    unconverged = fits = 0
    split = KFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(n))
    for f, (train, held) in enumerate(split):
        fitted = linear_svm.fit(train_x[train], y[train], weight[train], tiled, solver, device=device,
                                tol=tol, max_iter=max_iter, seed=seed)
        unconverged += int((~fitted.converged).sum())
        fits += tiled.size
        part = labels[train]
        trainable = np.any(part > 0, axis=0) & np.any(part < 0, axis=0)
        ap[f] = _held_out_ap(fitted.decision(train_x[held]), labels[held],
                             trainable, g)
    counted = np.isfinite(ap).any(axis=2).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # classes without a counted fold
        cv_ap = np.nanmean(ap, axis=0)
    chosen = np.empty(k)
    for c in range(k):
        if not np.isfinite(cv_ap[c]).any():
            chosen[c] = grid[g // 2]
            continue
        best = np.nanmax(cv_ap[c])
        chosen[c] = grid[np.flatnonzero(cv_ap[c] >= best - 1e-12)[0]]  # ties: the smallest cost
    y_final, weight_final = _problems(labels, 1, positive_weight)
    final = linear_svm.fit(train_x, y_final, weight_final, chosen, solver, device=device, tol=tol,
                           max_iter=max_iter, seed=seed)
    unconverged += int((~final.converged).sum())
    fits += k
    return ProbeFit(final.decision(test_x), grid, cv_ap, chosen, counted, unconverged, fits)


def describe(fit: ProbeFit, classes) -> dict:
    """What a result records of a probe: the grid, each class's chosen cost, held-out AP per
    cost (percent, None where no fold counted) and counted folds, and the unconverged fits."""
    def pct(v):
        return None if math.isnan(v) else round(100 * float(v), 3)
    return {
        "costs": [float(c) for c in fit.costs],
        "chosen_cost": {name: float(c) for name, c in zip(classes, fit.chosen)},
        "cv_ap": {name: [pct(v) for v in row] for name, row in zip(classes, fit.cv_ap)},
        "folds_scored": {name: int(n) for name, n in zip(classes, fit.folds_scored)},
        "unconverged_fits": fit.unconverged, "fits": fit.fits,
    }
