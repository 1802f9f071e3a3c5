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
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..hookspecs import hookimpl
from ..interfaces import ClassDetections, DetGroundTruth, Metrics, Predictions
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


@dataclass
class _BoxTable:
    """One class's ground truth as arrays: row k holds the boxes of image k, padded to ``width``;
    the last row stands for images without a box of the class."""

    boxes: np.ndarray  # [n_images + 1, width, 4]
    valid: np.ndarray  # [n_images + 1, width] bool
    difficult: np.ndarray  # [n_images + 1, width] bool

    @classmethod
    def build(cls, n_images: int, image: np.ndarray, boxes: np.ndarray, difficult: np.ndarray):
        """From per-object image rows, boxes and difficult flags (any order)."""
        order = np.argsort(image, kind="stable")  # keeps each image's boxes in file order
        image, boxes, difficult = image[order], boxes[order], difficult[order]
        starts = np.searchsorted(image, image, side="left")
        slot = np.arange(len(image)) - starts
        width = int(slot.max()) + 1 if len(image) else 1
        table = cls(np.zeros((n_images + 1, width, 4)), np.zeros((n_images + 1, width), dtype=bool),
                    np.zeros((n_images + 1, width), dtype=bool))
        table.boxes[image, slot] = boxes
        table.valid[image, slot] = True
        table.difficult[image, slot] = difficult
        return table


def _match(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, table: _BoxTable,
           iou_strict: bool, min_overlap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The devkit's matching on arrays (``image``: ground-truth row of each detection).

    A detection's best box is chosen among ALL boxes of its image (matched ones included), so it
    does not depend on earlier matches; the only sequential rule, "the first detection in rank
    order to hit a box takes it", is the first occurrence of each (image, box) among the hits.
    """
    n = len(scores)
    order = np.argsort(-scores, kind="stable")
    tp, fp = np.zeros(n), np.ones(n)
    # only detections in an image with a box of the class can hit anything (boxes are packed
    # from slot 0, so slot 0 is valid exactly when the image has one)
    rank = np.flatnonzero(table.valid[image[order], 0])
    if len(rank) == 0:
        return order, tp, fp
    img, box = image[order[rank]], boxes[order[rank]]
    g = table.boxes[img]  # [m, width, 4]
    iw = np.minimum(box[:, None, 2], g[..., 2]) - np.maximum(box[:, None, 0], g[..., 0]) + 1
    ih = np.minimum(box[:, None, 3], g[..., 3]) - np.maximum(box[:, None, 1], g[..., 1]) + 1
    overlaps = table.valid[img] & (iw > 0) & (ih > 0)
    ua = ((box[:, 2] - box[:, 0] + 1) * (box[:, 3] - box[:, 1] + 1))[:, None] \
        + (g[..., 2] - g[..., 0] + 1) * (g[..., 3] - g[..., 1] + 1) - iw * ih
    iou = np.full(iw.shape, -np.inf)
    np.divide(iw * ih, ua, out=iou, where=overlaps)
    jmax = np.argmax(iou, axis=1)  # the first of equal IoUs wins, as in the devkit's loop
    ovmax = iou[np.arange(len(rank)), jmax]
    hit = ovmax > min_overlap if iou_strict else ovmax >= min_overlap
    on_difficult = hit & table.difficult[img, jmax]
    candidates = np.flatnonzero(hit & ~on_difficult)
    _, first = np.unique(img[candidates] * table.boxes.shape[1] + jmax[candidates], return_index=True)
    tp[rank[candidates[first]]] = 1.0
    fp[rank[candidates[first]]] = 0.0
    fp[rank[on_difficult]] = 0.0  # neither true nor false positive
    return order, tp, fp


class _SplitTruth:
    """A DetGroundTruth flattened once into arrays (shared by every class's evaluation)."""

    def __init__(self, gt: DetGroundTruth):
        self.gt = gt
        self.row_of = {image_id: k for k, image_id in enumerate(dict.fromkeys(gt.image_ids))}
        self.ids = list(self.row_of)
        objs = [(self.row_of[i], o) for i in self.row_of for o in gt.objects.get(i, ())]
        self.image = np.array([r for r, _ in objs], dtype=np.int64)
        self.cls = np.array([o.class_name for _, o in objs], dtype=object)
        self.boxes = np.array([o.box for _, o in objs], dtype=np.float64).reshape(-1, 4)
        self.difficult = np.array([bool(o.difficult) for _, o in objs], dtype=bool)

    def rows_of(self, image_ids: Sequence[str]) -> np.ndarray:
        """The ground-truth row of each of ``image_ids`` (-1 for an id it does not know)."""
        return np.array([self.row_of.get(i, -1) for i in image_ids], dtype=np.int64)

    def columns(self, found: ClassDetections | Sequence[tuple], class_name: str,
                image_ids: Sequence[str], rows: np.ndarray):
        """(ground-truth row, boxes, scores) of one class's detections; ``rows`` is
        :meth:`rows_of` of ``image_ids``, the ids that ``found.image_index`` points into."""
        if not isinstance(found, ClassDetections):
            dets = ClassDetections.from_tuples(found, self.row_of, class_name)
            return dets.image_index, dets.boxes, dets.scores
        row = rows[found.image_index]
        if (row < 0).any():
            unknown = image_ids[int(found.image_index[int(np.argmax(row < 0))])]
            raise ValueError(f"class {class_name!r}: unrecognized image {unknown!r}: "
                             "not in the ground truth")
        return row, found.boxes, found.scores

    def pr(self, row: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
           class_name: str) -> tuple[np.ndarray, np.ndarray, int]:
        """Recall, precision and the number of positives of one class's detections."""
        if np.isnan(scores).any():
            raise ValueError(f"class {class_name!r}: NaN score for a detection in image "
                             f"{self.ids[row[int(np.argmax(np.isnan(scores)))]]!r}")
        mine = self.cls == class_name
        table = _BoxTable.build(len(self.row_of), self.image[mine], self.boxes[mine], self.difficult[mine])
        _, tp, fp = _match(row, boxes, scores, table, self.gt.iou_strict, MIN_OVERLAP)
        n_pos = int((~self.difficult[mine]).sum())
        rec, prec = cumulative_pr(tp, fp, n_pos)
        return rec, prec, n_pos


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
    row_of = {image_id: k for k, image_id in enumerate(gt_boxes)}
    image = np.array([row_of[i] for i in gt_boxes for _ in gt_boxes[i]], dtype=np.int64)
    boxes = np.array([b for i in gt_boxes for b in gt_boxes[i]], dtype=np.float64).reshape(-1, 4)
    difficult = np.array([d for i in gt_boxes for d in gt_difficult[i]], dtype=bool)
    table = _BoxTable.build(len(row_of), image, boxes, difficult)
    scores = np.fromiter((float(d[1]) for d in detections), dtype=np.float64, count=len(detections))
    row = np.array([row_of.get(d[0], len(row_of)) for d in detections], dtype=np.int64)
    det_boxes = np.array([d[2:6] for d in detections], dtype=np.float64).reshape(-1, 4)
    return _match(row, det_boxes, scores, table, iou_strict, min_overlap)


def detection_pr(
    detections: Sequence[tuple], ground_truth: DetGroundTruth, class_name: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Recall, precision and the number of positives of one class (``VOCevaldet.m``).

    Raises :class:`ValueError` for a detection on an image the ground truth does not know (the
    devkit's "unrecognized image").
    """
    truth = _SplitTruth(ground_truth)
    dets = ClassDetections.from_tuples(detections, truth.row_of, class_name)
    return truth.pr(dets.image_index, dets.boxes, dets.scores, class_name)


def detection_pr_curves(
    predictions: Predictions, ground_truth: DetGroundTruth
) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Recall, precision and number of positives of every class of ``ground_truth``.

    The curves :func:`evaluate_detection` scores (and the report plots). Every class needs a
    (possibly empty) list in ``predictions.detections``; raises :class:`ValueError` otherwise.
    """
    truth = _SplitTruth(ground_truth)
    rows = truth.rows_of(predictions.image_ids)
    curves = {}
    for name in ground_truth.class_names:
        if name not in predictions.detections:
            raise ValueError(f"no detections list for class {name!r}")
        columns = truth.columns(predictions.detections[name], name, predictions.image_ids, rows)
        curves[name] = truth.pr(*columns, name)
    return curves


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
    for name, (rec, prec, n_pos) in detection_pr_curves(predictions, ground_truth).items():
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
