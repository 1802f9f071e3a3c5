"""Top-k accuracy of single-label predictions (``top1``, ``top5``): ImageNet's metric.

An image counts as correct when its true class is among the ``k`` classes it scores highest.
Classes are ranked by score, ties by class index (the lower index first: a stable sort), so a
constant score row predicts the first ``k`` classes. ``mean`` is the fraction of images correct
(ImageNet's number, over images, not over classes); ``per_class`` is that fraction among each
class's images (NaN for a class without images).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ..hookspecs import hookimpl
from ..interfaces import Evaluator, LabelGroundTruth, Metrics, Predictions

TOP_K = {"top1": 1, "top5": 5}


def top_k_hits(scores: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Per image, whether ``targets[i]`` is among the ``k`` best columns of ``scores[i]``
    (ties broken towards the lower class index); a bool array [N]."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable")[:, :k]
    return (order == np.asarray(targets)[:, None]).any(axis=1)


def evaluate_top_k(predictions: Predictions, ground_truth: LabelGroundTruth, metric_id: str) -> Metrics:
    """``metric_id`` (``top1`` or ``top5``) of ``predictions`` (kind ``label``). Images and
    classes are matched by id and name; a missing or unknown image or class, a target outside the
    classes, or a NaN score raises ValueError naming it."""
    k = TOP_K[metric_id]
    if predictions.kind != "label" or predictions.scores is None:
        raise ValueError(f"{metric_id} needs single-label predictions (kind 'label' with scores), "
                         f"not kind {predictions.kind!r}")
    scores = np.asarray(predictions.scores, dtype=np.float64)
    expected = (len(predictions.image_ids), len(predictions.class_names))
    if scores.shape != expected:
        raise ValueError(f"scores have shape {scores.shape}, expected {expected}")
    if np.isnan(scores).any():
        raise ValueError("predictions contain NaN scores")
    targets = np.asarray(ground_truth.targets, dtype=np.int64).reshape(-1)
    if len(targets) != len(ground_truth.image_ids):
        raise ValueError(f"{len(targets)} targets for {len(ground_truth.image_ids)} ground-truth images")
    bad = (targets < 0) | (targets >= len(ground_truth.class_names))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"image {ground_truth.image_ids[i]!r} has target {targets[i]}, outside the "
                         f"{len(ground_truth.class_names)} classes")
    row_of = {image_id: i for i, image_id in enumerate(predictions.image_ids)}
    missing = [i for i in ground_truth.image_ids if i not in row_of]
    if missing:
        raise ValueError(f"no prediction for image {missing[0]!r}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if len(row_of) != len(ground_truth.image_ids):
        known = set(ground_truth.image_ids)
        unknown = next(i for i in predictions.image_ids if i not in known)
        raise ValueError(f"unrecognized image {unknown!r}: not in the ground truth")
    column_of = {name: c for c, name in enumerate(predictions.class_names)}
    absent = [c for c in ground_truth.class_names if c not in column_of]
    if absent:
        raise ValueError(f"no scores for class {absent[0]!r}")
    rows = np.array([row_of[i] for i in ground_truth.image_ids], dtype=np.intp)
    columns = np.array([column_of[c] for c in ground_truth.class_names], dtype=np.intp)
    hits = top_k_hits(scores[np.ix_(rows, columns)], targets, k)
    per_class = {}
    for c, name in enumerate(ground_truth.class_names):
        mine = targets == c
        per_class[name] = float(hits[mine].mean()) if mine.any() else float("nan")
    return Metrics(metric=metric_id, mean=float(hits.mean()) if len(hits) else float("nan"),
                   per_class=per_class, extra={"images": float(len(hits)), "k": float(k)})


_DESCRIPTIONS = {
    "top1": "top-1 accuracy of single-label predictions (ImageNet's metric; ties to the lower class index)",
    "top5": "top-5 accuracy of single-label predictions (true class among the 5 best scores)",
}


@hookimpl
def benchharness_evaluators():
    """The single-label accuracy evaluators ``top1`` and ``top5``."""
    return [Evaluator(id=metric_id, kinds=("label",), evaluate=partial(evaluate_top_k, metric_id=metric_id),
                      description=_DESCRIPTIONS[metric_id]) for metric_id in TOP_K]
