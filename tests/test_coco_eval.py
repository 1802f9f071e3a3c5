"""COCO AP on VOC data (benchharness.evaluators.coco): by hand and against pycocotools run
the ordinary way, from JSON files."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from benchharness.evaluators import coco
from benchharness.evaluators.coco import evaluate_coco, to_coco
from benchharness.interfaces import DetGroundTruth, DetObject, Predictions

BOX = (1, 1, 100, 100)


def gt_of(objects, classes=("a",)):
    return DetGroundTruth(list(classes), list(objects), objects)


def preds_of(dets, ids):
    return Predictions(kind="det", class_names=list(dets), image_ids=list(ids), detections=dets)


def test_conversion_uses_inclusive_widths_and_iscrowd_for_difficult():
    gt = gt_of({"x": [DetObject("a", (1, 1, 10, 20)), DetObject("a", (5, 5, 5, 5), True)]})
    gt_dict, results = to_coco(preds_of({"a": [("x", 0.5, 2, 3, 11, 12)]}, ["x"]), gt)
    anns = gt_dict["annotations"]
    assert anns[0]["bbox"] == [0, 0, 10, 20] and anns[0]["area"] == 200 and anns[0]["iscrowd"] == 0
    assert anns[1]["bbox"] == [4, 4, 1, 1] and anns[1]["iscrowd"] == 1
    assert all(a["id"] > 0 for a in anns)
    assert results == [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10], "score": 0.5}]


def test_ap_over_iou_thresholds_by_hand():
    # one object, one detection with IoU 7300 / 10000 = 0.73: matched at IoU 0.50 .. 0.70
    # (5 of the 10 thresholds), missed at 0.75 .. 0.95 -> coco-ap = 0.5, coco-ap50 = 1
    gt = gt_of({"1": [DetObject("a", BOX)]})
    p = preds_of({"a": [("1", 0.9, 1, 1, 100, 73)]}, ["1"])
    ap = evaluate_coco(p, gt, "coco-ap")
    ap50 = evaluate_coco(p, gt, "coco-ap50")
    assert ap.mean == pytest.approx(0.5) and ap.per_class["a"] == pytest.approx(0.5)
    assert ap50.mean == pytest.approx(1.0) and ap50.per_class["a"] == pytest.approx(1.0)
    assert ap.metric == "coco-ap" and ap50.metric == "coco-ap50"
    assert ap.extra["ap50"] == pytest.approx(1.0)


def test_difficult_objects_are_ignored_like_crowds():
    # image 1: an ordinary object, detected; image 2: a difficult object, not detected
    objects = {"1": [DetObject("a", BOX)], "2": [DetObject("a", BOX, difficult=True)]}
    p = preds_of({"a": [("1", 0.9, *BOX)]}, ["1", "2"])
    assert evaluate_coco(p, gt_of(objects), "coco-ap50").mean == pytest.approx(1.0)
    # were it an ordinary object, recall would stop at 1/2: precision 1 at recall thresholds
    # 0, .01, ..., .50 (51 of 101) and 0 beyond -> 51/101
    plain = {"1": [DetObject("a", BOX)], "2": [DetObject("a", BOX)]}
    assert evaluate_coco(p, gt_of(plain), "coco-ap50").mean == pytest.approx(51 / 101)
    # a detection on the difficult object is neither a TP nor a FP
    p2 = preds_of({"a": [("2", 0.95, *BOX), ("1", 0.9, *BOX)]}, ["1", "2"])
    assert evaluate_coco(p2, gt_of(objects), "coco-ap50").mean == pytest.approx(1.0)


def test_class_without_objects_is_nan_and_out_of_the_mean():
    gt = gt_of({"1": [DetObject("a", BOX)]}, classes=("a", "b"))
    p = preds_of({"a": [("1", 0.9, *BOX)], "b": [("1", 0.2, *BOX)]}, ["1"])
    m = evaluate_coco(p, gt, "coco-ap")
    assert m.per_class["a"] == pytest.approx(1.0) and math.isnan(m.per_class["b"])
    assert m.mean == pytest.approx(1.0)


def test_no_detections_and_errors():
    gt = gt_of({"1": [DetObject("a", BOX)]})
    assert evaluate_coco(preds_of({"a": []}, ["1"]), gt, "coco-ap").mean == 0.0
    with pytest.raises(ValueError, match="unrecognized image 'q'"):
        evaluate_coco(preds_of({"a": [("q", 0.1, *BOX)]}, ["1"]), gt, "coco-ap")
    with pytest.raises(ValueError, match="no detections list for class 'a'"):
        evaluate_coco(preds_of({}, ["1"]), gt, "coco-ap")


def _random_case(rng, n_images=12, classes=("a", "b", "c")):
    objects, dets = {}, {c: [] for c in classes}
    for i in range(n_images):
        image = f"im{i}"
        objs = []
        for _ in range(int(rng.integers(0, 5))):
            x1, y1 = (int(v) for v in rng.integers(1, 200, size=2))
            w, h = (int(v) for v in rng.integers(5, 120, size=2))
            objs.append(DetObject(str(rng.choice(classes)), (x1, y1, x1 + w, y1 + h),
                                  bool(rng.random() < 0.2)))
        objects[image] = objs
        for o in objs:
            if rng.random() < 0.8:
                jitter = rng.integers(-8, 9, size=4)
                box = [int(v) for v in np.array(o.box) + jitter]
                dets[o.class_name].append((image, float(np.round(rng.random(), 2)), *box))
        for _ in range(int(rng.integers(0, 4))):
            x1, y1 = (int(v) for v in rng.integers(1, 200, size=2))
            dets[str(rng.choice(classes))].append(
                (image, float(np.round(rng.random(), 2)), x1, y1, x1 + 30, y1 + 40))
    return DetGroundTruth(list(classes), list(objects), objects), preds_of(dets, list(objects))


def _reference_stats(tmp_path, gt: DetGroundTruth, preds: Predictions):
    """pycocotools driven the documented way: annotation JSON file, results JSON file."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    img_id = {i: k + 1 for k, i in enumerate(gt.image_ids)}
    cat_id = {c: k + 1 for k, c in enumerate(gt.class_names)}
    anns = []
    for i in gt.image_ids:
        for o in gt.objects[i]:
            x1, y1, x2, y2 = o.box
            anns.append({"id": len(anns) + 1, "image_id": img_id[i], "category_id": cat_id[o.class_name],
                         "bbox": [x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1],
                         "area": (x2 - x1 + 1) * (y2 - y1 + 1), "iscrowd": int(o.difficult)})
    res = [{"image_id": img_id[d[0]], "category_id": cat_id[c],
            "bbox": [d[2] - 1, d[3] - 1, d[4] - d[2] + 1, d[5] - d[3] + 1], "score": d[1]}
           for c, ds in preds.detections.items() for d in ds]
    (tmp_path / "gt.json").write_text(json.dumps({
        "images": [{"id": k} for k in img_id.values()], "annotations": anns,
        "categories": [{"id": k, "name": c} for c, k in cat_id.items()]}))
    (tmp_path / "res.json").write_text(json.dumps(res))
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO(str(tmp_path / "gt.json"))
        ev = COCOeval(cg, cg.loadRes(str(tmp_path / "res.json")), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def test_agrees_with_pycocotools_from_files(tmp_path):
    rng = np.random.default_rng(7)
    for trial in range(5):
        gt, preds = _random_case(rng)
        ref = _reference_stats(tmp_path, gt, preds)
        ap = evaluate_coco(preds, gt, "coco-ap")
        ap50 = evaluate_coco(preds, gt, "coco-ap50")
        assert ap.mean == pytest.approx(ref.stats[0], abs=1e-6)
        assert ap50.mean == pytest.approx(ref.stats[1], abs=1e-6)
        # per-class values average to the mean (classes with objects)
        scored = [v for v in ap.per_class.values() if not math.isnan(v)]
        assert np.mean(scored) == pytest.approx(ap.mean, abs=1e-9)
        for k, name in enumerate(gt.class_names):
            p = ref.eval["precision"][0, :, k, 0, -1]
            if (p > -1).any():
                assert ap50.per_class[name] == pytest.approx(p[p > -1].mean(), abs=1e-9)


def test_hook_registers_coco_evaluators():
    ids = {e.id: e.kinds for e in coco.benchharness_evaluators()}
    assert ids == {"coco-ap50": ("det",), "coco-ap": ("det",)}
