"""VOC detection AP: the devkit's matching of detections to ground-truth boxes (``VOCevaldet.m``).

For each class, the detections of the whole split are sorted by score, highest first, with a
stable sort (tied detections keep their input order, as MATLAB's ``sort`` does). Each detection
is then compared with **all** ground-truth boxes of that class in its image, difficult and
already-matched ones included, and takes the one of highest IoU (the first of equal IoUs):

* IoU ``>= 0.5`` (the devkit's ``minoverlap``; ``> 0.5`` with ``iou_strict``, the rule of the
  Python ports) and the box is **difficult**: the detection is neither a true nor a false
  positive (it stays in the ranking and only repeats a curve point);
* IoU above the threshold and the box not yet matched: a true positive, the box is now matched;
* IoU above the threshold and the box already matched: a false positive (a duplicate);
* otherwise (no box, no overlap, IoU below the threshold): a false positive.

IoU uses the inclusive-pixel convention of the annotations: a box ``(x1, y1, x2, y2)`` is
``x2 - x1 + 1`` pixels wide, and two boxes overlap only if the intersection's width and height
computed that way are both positive. The number of positives is the number of non-difficult
boxes of the class. Recall/precision come from
:func:`~benchharness.evaluators.voc_ap.cumulative_pr` and the AP from
:func:`~benchharness.evaluators.voc_ap.ap_voc07_11pt` or
:func:`~benchharness.evaluators.voc_ap.ap_voc10_area`.

The evaluators ``voc07-11pt`` and ``voc10-area`` (registered by
:mod:`benchharness.evaluators.voc_ap`) call :func:`evaluate_detection` for ``det``
predictions; this module registers no evaluator id of its own.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..hookspecs import hookimpl
from ..interfaces import DetGroundTruth, Metrics, Predictions
from .voc_ap import ap_voc07_11pt, ap_voc10_area, cumulative_pr

MIN_OVERLAP = 0.5
"""The devkit's ``VOCopts.minoverlap``."""

DET_METRIC_IDS = ("voc07-11pt", "voc10-area")


def iou_inclusive(box: Sequence[float], gt: Sequence[float]) -> float:
    """IoU of two 1-based inclusive boxes exactly as ``VOCevaldet.m`` computes it.

    Returns ``-inf`` when they do not overlap (intersection width or height ``<= 0``), as the
    devkit then never considers the pair.
    """
    iw = min(box[2], gt[2]) - max(box[0], gt[0]) + 1
    ih = min(box[3], gt[3]) - max(box[1], gt[1]) + 1
    if not (iw > 0 and ih > 0):
        return -math.inf
    ua = ((box[2] - box[0] + 1) * (box[3] - box[1] + 1)
          + (gt[2] - gt[0] + 1) * (gt[3] - gt[1] + 1)
          - iw * ih)
    return iw * ih / ua


def match_detections(
    detections: Sequence[tuple],
    gt_boxes: dict[str, list[tuple[float, float, float, float]]],
    gt_difficult: dict[str, list[bool]],
    iou_strict: bool = False,
    min_overlap: float = MIN_OVERLAP,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match one class's detections to its ground truth, as the devkit does.

    ``detections``: ``(image_id, score, x1, y1, x2, y2)`` in any order. ``gt_boxes`` /
    ``gt_difficult``: per image id, the class's boxes and their difficult flags (an image
    missing from them has no box of the class). Returns ``(order, tp, fp)``: the indices of the
    detections in ranking order and the 0/1 true/false positive flags in that order (both 0 for
    a detection matched to a difficult box).
    """
    n = len(detections)
    scores = np.fromiter((float(d[1]) for d in detections), dtype=np.float64, count=n)
    order = np.argsort(-scores, kind="stable")
    tp = np.zeros(n, dtype=np.float64)
    fp = np.zeros(n, dtype=np.float64)
    matched = {image_id: [False] * len(boxes) for image_id, boxes in gt_boxes.items()}
    for rank, index in enumerate(order):
        image_id, _, x1, y1, x2, y2 = detections[index]
        box = (float(x1), float(y1), float(x2), float(y2))
        boxes = gt_boxes.get(image_id, ())
        ovmax, jmax = -math.inf, -1
        for j, gt in enumerate(boxes):
            ov = iou_inclusive(box, gt)
            if ov > ovmax:  # strictly greater: the first of equal IoUs wins
                ovmax, jmax = ov, j
        hit = ovmax > min_overlap if iou_strict else ovmax >= min_overlap
        if hit:
            if gt_difficult[image_id][jmax]:
                continue  # neither true nor false positive
            if not matched[image_id][jmax]:
                tp[rank] = 1.0
                matched[image_id][jmax] = True
            else:
                fp[rank] = 1.0  # a duplicate detection of a matched object
        else:
            fp[rank] = 1.0
    return order, tp, fp


def detection_pr(
    detections: Sequence[tuple], ground_truth: DetGroundTruth, class_name: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Recall, precision and the number of positives of one class (``VOCevaldet.m``).

    Raises :class:`ValueError` for a detection on an image the ground truth does not know (the
    devkit's "unrecognized image").
    """
    known = set(ground_truth.image_ids)
    for det in detections:
        if len(det) != 6:
            raise ValueError(f"class {class_name!r}: a detection must be "
                             f"(image_id, score, x1, y1, x2, y2), got {det!r}")
        if det[0] not in known:
            raise ValueError(f"class {class_name!r}: unrecognized image {det[0]!r}: "
                             "not in the ground truth")
        if math.isnan(float(det[1])):
            raise ValueError(f"class {class_name!r}: NaN score for image {det[0]!r}")
    gt_boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    gt_difficult: dict[str, list[bool]] = {}
    n_pos = 0
    for image_id in ground_truth.image_ids:
        objs = [o for o in ground_truth.objects.get(image_id, ()) if o.class_name == class_name]
        gt_boxes[image_id] = [tuple(float(v) for v in o.box) for o in objs]
        gt_difficult[image_id] = [bool(o.difficult) for o in objs]
        n_pos += sum(not o.difficult for o in objs)
    _, tp, fp = match_detections(detections, gt_boxes, gt_difficult,
                                 iou_strict=ground_truth.iou_strict)
    rec, prec = cumulative_pr(tp, fp, n_pos)
    return rec, prec, n_pos


def evaluate_detection(
    predictions: Predictions, ground_truth: DetGroundTruth, metric_id: str
) -> Metrics:
    """Per-class and mean detection AP (``voc07-11pt`` or ``voc10-area``).

    Every class of the ground truth needs a (possibly empty) list in
    ``predictions.detections``. A class without non-difficult objects gets NaN and is left out
    of the mean (``extra["n_classes_scored"]`` says how many classes the mean is over).
    """
    if metric_id not in DET_METRIC_IDS:
        raise ValueError(f"unknown detection metric {metric_id!r}; expected one of {DET_METRIC_IDS}")
    if predictions.kind != "det" or predictions.detections is None:
        raise ValueError(f"{metric_id} on detections needs predictions of kind 'det' with detections")
    if not isinstance(ground_truth, DetGroundTruth):
        raise ValueError(f"detection predictions need a DetGroundTruth, got {type(ground_truth).__name__}")
    per_class: dict[str, float] = {}
    for name in ground_truth.class_names:
        if name not in predictions.detections:
            raise ValueError(f"no detections list for class {name!r}")
        rec, prec, n_pos = detection_pr(predictions.detections[name], ground_truth, name)
        if n_pos == 0:
            per_class[name] = float("nan")
        elif metric_id == "voc07-11pt":
            per_class[name] = ap_voc07_11pt(rec, prec)
        else:
            per_class[name] = ap_voc10_area(rec, prec)
    values = np.array(list(per_class.values()), dtype=np.float64)
    scored = values[~np.isnan(values)]
    return Metrics(
        metric=metric_id,
        mean=float(scored.mean()) if scored.size else float("nan"),
        per_class=per_class,
        extra={"n_classes_scored": float(scored.size)},
    )


@hookimpl
def benchharness_evaluators():
    """None of its own: ``voc07-11pt`` / ``voc10-area`` (module ``voc_ap``) dispatch here."""
    return []
