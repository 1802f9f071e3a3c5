"""Average precision, exactly as the references compute it (pure numpy).

Three AP definitions are offered, each with a stable evaluator id:

``voc07-11pt``
    The VOC2007 devkit (``VOCevalcls.m`` / ``VOCevaldet.m``): the mean over the eleven recall
    thresholds ``t = 0:0.1:1`` of the maximum precision at recall ``>= t`` (0 where there is
    none). The thresholds are the doubles MATLAB's colon operator produces, not
    ``np.arange(0, 1.1, 0.1)``; the two differ at ``t = 0.6, 0.7`` (see :data:`VOC07_THRESHOLDS`).
``voc10-area``
    The VOC2010+ devkit (``VOCap.m``): the area under the precision envelope (precision made
    monotonically decreasing from the right), with sentinels ``recall 0 -> 1`` and
    ``precision 0``, summed over the points where recall changes.
``sklearn-ap``
    Non-interpolated AP as ``sklearn.metrics.average_precision_score`` computes it:
    ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, tied scores forming one
    threshold. The published VOC07 classification numbers (Krahenbuhl et al. protocol) use it.

The precision/recall builders (:func:`classification_pr`, :func:`cumulative_pr`) are separate
from the AP functions so that the detection matcher (:mod:`benchharness.evaluators.voc_det`),
which produces its own per-detection true/false positive flags, reuses
:func:`ap_voc07_11pt` and :func:`ap_voc10_area` as is. The ``voc07-11pt`` and ``voc10-area``
evaluators score both ``cls`` and ``det`` predictions (:func:`evaluate_ap` dispatches on
``predictions.kind``).

Classes without positives
    The devkit divides by the number of positives, giving NaN recall and a meaningless AP
    (11-point: 0, area: NaN). :func:`evaluate_classification` reports such a class as NaN in
    ``per_class`` and leaves it out of ``mean`` (``extra["n_classes_scored"]`` says how many
    classes the mean is over).
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import numpy as np

from ..hookspecs import hookimpl
from ..interfaces import ClsGroundTruth, Evaluator, Metrics, Predictions


def _matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """The doubles MATLAB's ``start:step:stop`` yields (positive step, exact multiple case).

    MATLAB fills the first half as ``start + k*step``, the second half as ``stop - k*step``
    and, for an even number of steps, sets the middle element to ``(start+stop)/2``.
    """
    n = int(round((stop - start) / step))
    out = np.empty(n + 1, dtype=np.float64)
    for k in range(n // 2 + 1):
        out[k] = start + k * step
        out[n - k] = stop - k * step
    if n % 2 == 0:
        out[n // 2] = (start + stop) / 2
    return out


VOC07_THRESHOLDS: np.ndarray = _matlab_colon(0.0, 0.1, 1.0)
"""The recall thresholds of the VOC2007 devkit's ``for t=0:0.1:1``.

Element 3 is ``0.30000000000000004`` (so a recall of exactly 3/10 does *not* reach it, as in the
devkit), while elements 6 and 7 are the doubles nearest 0.6 and 0.7 (``np.arange`` would give
``0.6000000000000001`` and ``0.7000000000000001``).
"""

METRIC_IDS = ("voc07-11pt", "voc10-area", "sklearn-ap")


def _as_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    return a


def ap_voc07_11pt(rec, prec) -> float:
    """VOC2007 11-point interpolated AP from a recall/precision curve.

    ``mean over t in 0,0.1..1 of max(prec[rec >= t])``, 0 for a ``t`` no point reaches. NaN
    precisions are ignored as MATLAB's ``max`` ignores them; NaN recalls never reach a threshold.
    """
    rec = _as_1d(rec, "rec")
    prec = _as_1d(prec, "prec")
    if rec.shape != prec.shape:
        raise ValueError(f"rec and prec differ in length: {rec.shape} vs {prec.shape}")
    ap = 0.0
    for t in VOC07_THRESHOLDS:
        with np.errstate(invalid="ignore"):
            p = prec[rec >= t]
        p = p[~np.isnan(p)]
        ap += (p.max() if p.size else 0.0) / 11.0
    # Eleven additions of 1/11 give 1.0000000000000002 (in MATLAB too); keep the fraction in
    # [0, 1] as Metrics promises -- a change of one ulp, far below the 1e-6 agreement asked.
    return float(min(ap, 1.0))


def ap_voc10_area(rec, prec) -> float:
    """VOC2010+ AP: area under the monotone precision envelope (``VOCap.m``).

    Sentinels ``mrec = [0, rec, 1]``, ``mpre = [0, prec, 0]``; ``mpre`` made non-increasing
    from the right; AP is ``sum((mrec[i] - mrec[i-1]) * mpre[i])`` over the ``i`` where
    recall changes. NaN precisions are ignored by the envelope as MATLAB's ``max`` ignores them.
    """
    rec = _as_1d(rec, "rec")
    prec = _as_1d(prec, "prec")
    if rec.shape != prec.shape:
        raise ValueError(f"rec and prec differ in length: {rec.shape} vs {prec.shape}")
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 2, -1, -1):
        # MATLAB max(a, b) returns the non-NaN operand when one is NaN.
        mpre[i] = np.fmax(mpre[i], mpre[i + 1])
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mpre[idx]))


def ap_sklearn(scores, targets) -> float:
    """Non-interpolated AP as ``sklearn.metrics.average_precision_score`` (binary case).

    ``targets``: a positive is any value ``> 0`` (so ``{0, 1}``, ``{-1, 1}`` and booleans all
    work). Images are sorted by score descending; every distinct score is one threshold, so tied
    images enter together. ``AP = sum_n (R_n - R_{n-1}) P_n`` with ``R_0 = 0``. Returns NaN when
    there is no positive (sklearn warns and returns a version-dependent value there).
    """
    scores = _as_1d(scores, "scores")
    pos = _as_1d(targets, "targets") > 0
    if scores.shape != pos.shape:
        raise ValueError(f"scores and targets differ in length: {scores.shape} vs {pos.shape}")
    n_pos = int(pos.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    tp = np.cumsum(pos[order])
    # last index of every run of equal scores = one threshold
    last = np.r_[np.nonzero(s[1:] != s[:-1])[0], s.size - 1]
    tps = tp[last].astype(np.float64)
    n_above = (last + 1).astype(np.float64)
    precision = tps / n_above
    recall = tps / n_pos
    d_recall = np.diff(np.r_[0.0, recall])
    return float(np.sum(d_recall * precision))


def cumulative_pr(tp_flags, fp_flags, n_pos: int) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision from per-item true/false positive flags already in score order.

    ``rec = cumsum(tp) / n_pos``, ``prec = cumsum(tp) / (cumsum(tp) + cumsum(fp))``, as in both
    ``VOCevalcls.m`` and ``VOCevaldet.m``. With ``n_pos == 0`` the recall is all NaN (the devkit's
    0/0); the detection matcher can build its curve with this and pass it to the AP functions.
    """
    tp = np.cumsum(np.asarray(tp_flags, dtype=np.float64))
    fp = np.cumsum(np.asarray(fp_flags, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        rec = tp / n_pos if n_pos > 0 else np.full_like(tp, np.nan)
        prec = tp / (tp + fp)
    return rec, prec


def classification_pr(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision for one class, as ``VOCevalcls.m`` computes them.

    ``labels`` are VOC labels: 1 positive, -1 negative, 0 difficult. Difficult images are
    dropped (in the devkit they count as neither TP nor FP, which only repeats curve points and
    changes no AP); the rest are sorted by score descending with a stable sort (ties keep input
    order, like MATLAB's ``sort``), and the cumulative TP/FP counts give recall and precision.
    """
    scores = _as_1d(scores, "scores")
    labels = _as_1d(labels, "labels")
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in length: {scores.shape} vs {labels.shape}")
    keep = labels != 0
    scores, labels = scores[keep], labels[keep]
    order = np.argsort(-scores, kind="stable")
    gt = labels[order]
    return cumulative_pr(gt > 0, gt < 0, int((labels > 0).sum()))


def _class_ap(scores: np.ndarray, labels: np.ndarray, metric_id: str) -> float:
    if not np.any(labels > 0):
        return float("nan")
    if metric_id == "sklearn-ap":
        keep = labels != 0
        return ap_sklearn(scores[keep], labels[keep] > 0)
    rec, prec = classification_pr(scores, labels)
    if metric_id == "voc07-11pt":
        return ap_voc07_11pt(rec, prec)
    return ap_voc10_area(rec, prec)


def _index(names: Sequence[str], what: str) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in index:
            raise ValueError(f"{what} {name!r} appears more than once")
        index[name] = i
    return index


def evaluate_classification(
    predictions: Predictions, ground_truth: ClsGroundTruth, metric_id: str
) -> Metrics:
    """Per-class and mean AP of ``predictions`` (kind ``cls``) against VOC labels.

    Images and classes are matched by id/name, so their orders may differ. An image of the
    ground truth missing from the predictions, or a predicted image the ground truth does not
    know (the devkit's "unrecognized image"), raises :class:`ValueError` naming it. A class
    without positives gets NaN and is left out of the mean.
    """
    if metric_id not in METRIC_IDS:
        raise ValueError(f"unknown metric {metric_id!r}; expected one of {METRIC_IDS}")
    if predictions.kind != "cls" or predictions.scores is None:
        raise ValueError(f"{metric_id} needs classification predictions (kind 'cls' with scores)")
    scores = np.asarray(predictions.scores, dtype=np.float64)
    labels = np.asarray(ground_truth.labels)
    n_pred, n_gt = len(predictions.image_ids), len(ground_truth.image_ids)
    if scores.shape != (n_pred, len(predictions.class_names)):
        raise ValueError(
            f"scores have shape {scores.shape}, expected ({n_pred}, {len(predictions.class_names)})"
        )
    if labels.shape != (n_gt, len(ground_truth.class_names)):
        raise ValueError(
            f"labels have shape {labels.shape}, expected ({n_gt}, {len(ground_truth.class_names)})"
        )
    if np.isnan(scores).any():
        raise ValueError("predictions contain NaN scores")

    pred_images = _index(predictions.image_ids, "predicted image")
    gt_images = _index(ground_truth.image_ids, "ground-truth image")
    missing = [i for i in ground_truth.image_ids if i not in pred_images]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"no prediction for image {missing[0]!r}{more}")
    unknown = [i for i in predictions.image_ids if i not in gt_images]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ValueError(f"unrecognized image {unknown[0]!r}{more}: not in the ground truth")
    pred_classes = _index(predictions.class_names, "predicted class")
    missing_cls = [c for c in ground_truth.class_names if c not in pred_classes]
    if missing_cls:
        raise ValueError(f"no scores for class {missing_cls[0]!r}")

    rows = np.array([pred_images[i] for i in ground_truth.image_ids], dtype=np.intp)
    per_class: dict[str, float] = {}
    for c, name in enumerate(ground_truth.class_names):
        per_class[name] = _class_ap(scores[rows, pred_classes[name]], labels[:, c], metric_id)
    values = np.array(list(per_class.values()), dtype=np.float64)
    scored = values[~np.isnan(values)]
    mean = float(scored.mean()) if scored.size else float("nan")
    return Metrics(
        metric=metric_id,
        mean=mean,
        per_class=per_class,
        extra={"n_classes_scored": float(scored.size)},
    )


_DESCRIPTIONS = {
    "voc07-11pt": "VOC2007 devkit 11-point interpolated AP (cls and det; difficult ignored)",
    "voc10-area": "VOC2010+ devkit AP: area under the monotone precision envelope (cls and det)",
    "sklearn-ap": "non-interpolated AP as sklearn's average_precision_score (cls; difficult ignored)",
}

_KINDS = {"voc07-11pt": ("cls", "det"), "voc10-area": ("cls", "det"), "sklearn-ap": ("cls",)}


def evaluate_ap(predictions: Predictions, ground_truth, metric_id: str) -> Metrics:
    """Score ``predictions`` with ``metric_id``, dispatching on ``predictions.kind``.

    ``cls`` goes to :func:`evaluate_classification`; ``det`` (for ``voc07-11pt`` and
    ``voc10-area``) to :func:`benchharness.evaluators.voc_det.evaluate_detection`.
    """
    if metric_id not in METRIC_IDS:
        raise ValueError(f"unknown metric {metric_id!r}; expected one of {METRIC_IDS}")
    if predictions.kind not in _KINDS[metric_id]:
        raise ValueError(f"{metric_id} scores {' and '.join(_KINDS[metric_id])} predictions, "
                         f"not {predictions.kind!r}")
    if predictions.kind == "det":
        from .voc_det import evaluate_detection  # voc_det imports this module

        return evaluate_detection(predictions, ground_truth, metric_id)
    return evaluate_classification(predictions, ground_truth, metric_id)


@hookimpl
def benchharness_evaluators():
    """The AP evaluators ``voc07-11pt``, ``voc10-area`` (cls and det) and ``sklearn-ap`` (cls)."""
    return [
        Evaluator(
            id=metric_id,
            kinds=_KINDS[metric_id],
            evaluate=partial(evaluate_ap, metric_id=metric_id),
            description=_DESCRIPTIONS[metric_id],
        )
        for metric_id in METRIC_IDS
    ]
