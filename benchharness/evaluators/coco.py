"""COCO-style detection AP on VOC data, through pycocotools' ``COCOeval``.

``coco-ap50``
    AP at IoU 0.5 (COCOeval's ``stats[1]``): 101-point interpolated precision, at most 100
    detections per image and class, no area restriction.
``coco-ap``
    AP averaged over the IoU thresholds 0.50:0.05:0.95 (``stats[0]``).

The VOC ground truth and detections are converted in memory, no file is written:

* image ids become the integers 1..N in the order of ``ground_truth.image_ids``, classes the
  category ids 1..C in the order of ``ground_truth.class_names``;
* a 1-based inclusive box ``(x1, y1, x2, y2)`` becomes ``[x1 - 1, y1 - 1, x2 - x1 + 1,
  y2 - y1 + 1]`` (the inclusive-pixel width, so the IoU is the one the VOC devkit computes),
  with ``area = w * h``;
* a difficult object becomes ``iscrowd = 1``: COCOeval then ignores it, and a detection it
  absorbs is neither a true nor a false positive. (COCOeval measures overlap with a crowd box
  as intersection over the detection's area, and lets several detections match it.)

Per-class values are the mean of ``eval["precision"]`` over recall thresholds (and IoU
thresholds for ``coco-ap``) of that category; a class without non-difficult objects is NaN and,
as in COCOeval, left out of the mean, which equals COCOeval's own ``stats`` value.
"""

from __future__ import annotations

import contextlib
import io
import math
from functools import partial

import numpy as np

from ..hookspecs import hookimpl
from ..interfaces import DetGroundTruth, Evaluator, Metrics, Predictions

COCO_METRIC_IDS = ("coco-ap50", "coco-ap")

_STAT_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
               "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")


def _coco_box(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1 - 1.0, y1 - 1.0, x2 - x1 + 1.0, y2 - y1 + 1.0]


def to_coco(predictions: Predictions, ground_truth: DetGroundTruth):
    """The ``(gt_dataset, results)`` pair: a COCO-format ground-truth dict and a results list.

    Raises :class:`ValueError` for a detection on an image the ground truth does not know or a
    class of the ground truth without a detections list.
    """
    if predictions.kind != "det" or predictions.detections is None:
        raise ValueError("COCO AP needs predictions of kind 'det' with detections")
    if not isinstance(ground_truth, DetGroundTruth):
        raise ValueError(f"COCO AP needs a DetGroundTruth, got {type(ground_truth).__name__}")
    image_index = {image_id: k for k, image_id in enumerate(ground_truth.image_ids, start=1)}
    category = {name: c for c, name in enumerate(ground_truth.class_names, start=1)}
    images = [{"id": k, "file_name": image_id} for image_id, k in image_index.items()]
    categories = [{"id": c, "name": name} for name, c in category.items()]
    annotations = []
    for image_id, k in image_index.items():
        for obj in ground_truth.objects.get(image_id, ()):
            if obj.class_name not in category:
                continue
            bbox = _coco_box(obj.box)
            annotations.append({"id": len(annotations) + 1,  # ids must be > 0 for COCOeval
                                "image_id": k, "category_id": category[obj.class_name],
                                "bbox": bbox, "area": bbox[2] * bbox[3],
                                "iscrowd": int(bool(obj.difficult))})
    results = []
    for name, c in category.items():
        if name not in predictions.detections:
            raise ValueError(f"no detections list for class {name!r}")
        for det in predictions.detection_tuples(name):
            image_id, score = det[0], float(det[1])
            if image_id not in image_index:
                raise ValueError(f"class {name!r}: unrecognized image {image_id!r}: "
                                 "not in the ground truth")
            if math.isnan(score):
                raise ValueError(f"class {name!r}: NaN score for image {image_id!r}")
            results.append({"image_id": image_index[image_id], "category_id": c,
                            "bbox": _coco_box(det[2:6]), "score": score})
    gt = {"info": {"description": "VOC converted by benchharness"}, "images": images,
          "annotations": annotations, "categories": categories}
    return gt, results


def run_cocoeval(predictions: Predictions, ground_truth: DetGroundTruth):
    """Run pycocotools' COCOeval (bbox) on the converted data; returns the evaluated object.

    pycocotools' progress prints are swallowed.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_dict, results = to_coco(predictions, ground_truth)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        if results:
            dt = gt.loadRes(results)
        else:  # loadRes cannot take an empty list
            dt = COCO()
            dt.dataset = {"images": list(gt_dict["images"]),
                          "categories": list(gt_dict["categories"]), "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def evaluate_coco(predictions: Predictions, ground_truth: DetGroundTruth, metric_id: str) -> Metrics:
    """``coco-ap50`` or ``coco-ap`` of ``predictions``; ``extra`` holds all twelve COCO stats."""
    if metric_id not in COCO_METRIC_IDS:
        raise ValueError(f"unknown metric {metric_id!r}; expected one of {COCO_METRIC_IDS}")
    ev = run_cocoeval(predictions, ground_truth)
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    area_all = list(ev.params.areaRngLbl).index("all")
    max_dets = len(ev.params.maxDets) - 1  # 100
    if metric_id == "coco-ap50":
        t = np.flatnonzero(np.isclose(ev.params.iouThrs, 0.5))
        precision = precision[t]
    per_class: dict[str, float] = {}
    for k, name in enumerate(ground_truth.class_names):
        p = precision[:, :, k, area_all, max_dets]
        p = p[p > -1]
        per_class[name] = float(p.mean()) if p.size else float("nan")
    stat = ev.stats[0] if metric_id == "coco-ap" else ev.stats[1]
    mean = float(stat) if stat > -1 else float("nan")
    extra = {name: float(v) for name, v in zip(_STAT_NAMES, ev.stats)}
    extra["n_classes_scored"] = float(sum(not math.isnan(v) for v in per_class.values()))
    return Metrics(metric=metric_id, mean=mean, per_class=per_class, extra=extra)


_DESCRIPTIONS = {
    "coco-ap50": "COCO AP at IoU 0.5 via pycocotools COCOeval (difficult objects as iscrowd)",
    "coco-ap": "COCO AP averaged over IoU 0.50:0.95 via pycocotools COCOeval (difficult as iscrowd)",
}


@hookimpl
def benchharness_evaluators():
    """The detection evaluators ``coco-ap50`` and ``coco-ap``."""
    return [Evaluator(id=m, kinds=("det",), evaluate=partial(evaluate_coco, metric_id=m),
                      description=_DESCRIPTIONS[m]) for m in COCO_METRIC_IDS]
