"""Detection AP: the evaluator vs a straightforward per-detection loop (the devkit's VOCevaldet
written as plain Python), on 5,000 images x 20 classes x ~50 detections per image and class.

Both must give identical per-class APs. ``det_eval_speedup`` is the loop's time over the
evaluator's on the columns the detection task hands it (:class:`ClassDetections`);
``det_eval_speedup_from_tuples`` counts converting a list of tuples too (what a user's own
detections or a results file give).

Usage: python benchmarks/det_eval_speed.py [--images 5000] [--dets-per-class 50] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from benchharness.data.voc.classes import VOC_CLASSES
from benchharness.evaluators.voc_ap import ap_voc07_11pt, cumulative_pr
from benchharness.evaluators.voc_det import evaluate_detection
from benchharness.interfaces import ClassDetections, DetGroundTruth, DetObject, Predictions
from speed_file import merge_figures


def make_split(n_images: int, dets_per_class: int, seed: int = 0):
    """Random ground truth (1-5 objects per image, 5% difficult) and, for every image and
    class, ``dets_per_class`` detections: jittered copies of the image's objects of that class
    (wrong sizes and duplicates included) and background boxes, scores rounded so ties occur."""
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}" for i in range(n_images)]
    objects = {}
    for image_id in ids:
        objs = []
        for _ in range(rng.integers(1, 6)):
            x1, y1 = rng.uniform(1, 400, 2)
            w, h = rng.uniform(20, 200, 2)
            objs.append(DetObject(VOC_CLASSES[rng.integers(20)], (x1, y1, x1 + w, y1 + h),
                                  bool(rng.random() < 0.05)))
        objects[image_id] = objs
    detections = {}
    for name in VOC_CLASSES:
        image = np.repeat(np.arange(n_images), dets_per_class)
        x1, y1 = rng.uniform(1, 400, (2, len(image)))
        boxes = np.stack([x1, y1, x1 + rng.uniform(10, 200, len(image)),
                          y1 + rng.uniform(10, 200, len(image))], 1)
        for k, image_id in enumerate(ids):  # a third of each image's detections near its objects
            mine = [o.box for o in objects[image_id] if o.class_name == name]
            if mine:
                rows = slice(k * dets_per_class, k * dets_per_class + dets_per_class // 3)
                picked = np.asarray(mine)[rng.integers(len(mine), size=dets_per_class // 3)]
                boxes[rows] = picked + rng.normal(0, 8, picked.shape)
        scores = np.round(rng.random(len(image)), 3)
        detections[name] = ClassDetections(image, scores, boxes)
    return (Predictions("det", VOC_CLASSES, ids, detections=detections),
            DetGroundTruth(VOC_CLASSES, ids, objects))


def loop_ap(detections: list[tuple], gt: DetGroundTruth, cls: str) -> float:
    """VOCevaldet as a plain loop: one detection at a time, one ground-truth box at a time."""
    boxes, diff, used, n_pos = {}, {}, {}, 0
    for image_id, objs in gt.objects.items():
        mine = [o for o in objs if o.class_name == cls]
        boxes[image_id] = [o.box for o in mine]
        diff[image_id] = [o.difficult for o in mine]
        used[image_id] = [False] * len(mine)
        n_pos += sum(not o.difficult for o in mine)
    ranked = sorted(range(len(detections)), key=lambda i: -detections[i][1])  # stable
    tp, fp = np.zeros(len(ranked)), np.zeros(len(ranked))
    for r, i in enumerate(ranked):
        image_id, _, x1, y1, x2, y2 = detections[i]
        ovmax, jmax = -math.inf, -1
        for j, (g1, h1, g2, h2) in enumerate(boxes.get(image_id, [])):
            iw = min(x2, g2) - max(x1, g1) + 1
            ih = min(y2, h2) - max(y1, h1) + 1
            if iw > 0 and ih > 0:
                ua = (x2 - x1 + 1) * (y2 - y1 + 1) + (g2 - g1 + 1) * (h2 - h1 + 1) - iw * ih
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax, jmax = ov, j
        if ovmax >= 0.5:
            if not diff[image_id][jmax]:
                if not used[image_id][jmax]:
                    tp[r], used[image_id][jmax] = 1, True
                else:
                    fp[r] = 1
        else:
            fp[r] = 1
    rec, prec = cumulative_pr(tp, fp, n_pos)
    return ap_voc07_11pt(rec, prec)


def measure(n_images: int = 5000, dets_per_class: int = 50) -> dict:
    """The figures of this benchmark (see the module docstring); raises if the APs differ."""
    predictions, gt = make_split(n_images, dets_per_class)
    tuples = {c: predictions.detection_tuples(c) for c in VOC_CLASSES}
    as_tuples = Predictions("det", VOC_CLASSES, predictions.image_ids, detections=tuples)
    start = time.perf_counter()
    fast = evaluate_detection(predictions, gt, "voc07-11pt").per_class
    t_columns = time.perf_counter() - start
    start = time.perf_counter()
    from_tuples = evaluate_detection(as_tuples, gt, "voc07-11pt").per_class
    t_tuples = time.perf_counter() - start
    start = time.perf_counter()
    slow = {c: loop_ap(tuples[c], gt, c) for c in VOC_CLASSES}
    t_loop = time.perf_counter() - start
    max_diff = max(max(abs(fast[c] - slow[c]), abs(from_tuples[c] - slow[c])) for c in VOC_CLASSES)
    if max_diff != 0:
        raise SystemExit(f"the evaluator and the loop disagree (max AP difference {max_diff})")
    return {"det_eval_speedup": round(t_loop / t_columns, 1),
            "det_eval_speedup_from_tuples": round(t_loop / t_tuples, 1),
            "det_eval_seconds": round(t_columns, 3), "det_eval_from_tuples_seconds": round(t_tuples, 3),
            "det_eval_loop_seconds": round(t_loop, 3), "det_eval_max_ap_difference": max_diff,
            "det_eval_detections": sum(len(v) for v in tuples.values()), "det_eval_images": n_images}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets-per-class", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = parser.parse_args()
    merge_figures(args.out, measure(args.images, args.dets_per_class))


if __name__ == "__main__":
    main()
