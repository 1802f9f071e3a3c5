"""VOC detection matching (benchharness.evaluators.voc_det), on cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchharness.evaluators import voc_ap
from benchharness.evaluators.voc_ap import ap_voc07_11pt, ap_voc10_area
from benchharness.evaluators.voc_det import (
    detection_pr,
    evaluate_detection,
    iou_inclusive,
    match_detections,
)
from benchharness.interfaces import ClassDetections, DetGroundTruth, DetObject, Predictions

BOX = (1, 1, 10, 10)  # 10 x 10 pixels under the inclusive convention


def gt_of(objects: dict[str, list[DetObject]], classes=("a",), strict=False, ids=None):
    ids = list(ids or objects)
    return DetGroundTruth(list(classes), ids, {i: objects.get(i, []) for i in ids}, iou_strict=strict)


def preds_of(dets: dict[str, list[tuple]], image_ids):
    return Predictions(kind="det", class_names=list(dets), image_ids=list(image_ids), detections=dets)


def both_aps(dets, gt, name="a"):
    rec, prec, _ = detection_pr(dets, gt, name)
    return ap_voc07_11pt(rec, prec), ap_voc10_area(rec, prec)


# ------------------------------------------------------------------------------ IoU


def test_iou_uses_inclusive_pixel_widths():
    assert iou_inclusive(BOX, BOX) == 1.0
    # 2x2 boxes sharing one column: intersection 1x2 = 2, union 4 + 4 - 2 = 6
    assert iou_inclusive((1, 1, 2, 2), (2, 1, 3, 2)) == pytest.approx(1 / 3)
    # sharing one column of 10 pixels: 10 / (100 + 100 - 10)
    assert iou_inclusive(BOX, (10, 1, 19, 10)) == pytest.approx(10 / 190)
    # adjacent boxes (x 1..10 and 11..20) do not overlap
    assert iou_inclusive(BOX, (11, 1, 20, 10)) == -math.inf
    # a 1-pixel box inside: 1 / 100
    assert iou_inclusive(BOX, (5, 5, 5, 5)) == pytest.approx(0.01)


# ------------------------------------------------------------------------------ basic rules


def test_true_positive_duplicate_and_miss_by_hand():
    gt = gt_of({"1": [DetObject("a", BOX)], "2": [DetObject("a", (20, 20, 40, 40))], "3": []})
    dets = [
        ("3", 0.95, *BOX),             # image without objects: FP
        ("1", 0.9, *BOX),              # TP
        ("1", 0.8, 1, 1, 10, 11),      # duplicate of the matched box: FP
        ("2", 0.7, 1, 1, 10, 10),      # no overlap: FP
    ]
    order, tp, fp = match_detections(dets, {"1": [BOX], "2": [(20, 20, 40, 40)]},
                                     {"1": [False], "2": [False]})
    assert list(order) == [0, 1, 2, 3]
    assert list(tp) == [0, 1, 0, 0] and list(fp) == [1, 0, 1, 1]
    # 2 positives: rec 0 .5 .5 .5, prec 0 .5 1/3 1/4
    rec, prec, n_pos = detection_pr(dets, gt, "a")
    assert n_pos == 2
    np.testing.assert_allclose(rec, [0, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(prec, [0, 0.5, 1 / 3, 0.25])
    # 11-pt: t = 0..0.5 (6 thresholds) -> max prec 1/2 ; t >= 0.6 -> 0   => 3/11
    # area:  recall 0 -> .5 at envelope 1/2                              => 1/4
    assert both_aps(dets, gt) == pytest.approx((3 / 11, 0.25))


def test_detections_are_sorted_by_score():
    gt = gt_of({"1": [DetObject("a", BOX)], "2": []})
    dets = [("2", 0.1, *BOX), ("1", 0.9, *BOX)]  # TP has the higher score, given last
    rec, prec, _ = detection_pr(dets, gt, "a")
    np.testing.assert_allclose(rec, [1, 1])
    np.testing.assert_allclose(prec, [1, 0.5])
    assert both_aps(dets, gt) == pytest.approx((1.0, 1.0))


def test_ties_keep_input_order():
    gt = gt_of({"1": [DetObject("a", BOX)], "2": []})
    fp_first = [("2", 0.5, *BOX), ("1", 0.5, *BOX)]
    # FP then TP: rec 0 1, prec 0 1/2 -> every 11-pt threshold and the area see 1/2
    assert both_aps(fp_first, gt) == pytest.approx((0.5, 0.5))
    # TP then FP: rec 1 1, prec 1 1/2 -> 1
    assert both_aps(fp_first[::-1], gt) == pytest.approx((1.0, 1.0))


# ------------------------------------------------------------------------------ difficult


def test_detection_on_difficult_box_is_neither_tp_nor_fp():
    gt = gt_of({"1": [DetObject("a", BOX, difficult=True), DetObject("a", (30, 30, 40, 40))]})
    dets = [("1", 0.9, *BOX), ("1", 0.8, *BOX), ("1", 0.7, 30, 30, 40, 40)]
    order, tp, fp = match_detections(dets, {"1": [BOX, (30, 30, 40, 40)]}, {"1": [True, False]})
    assert list(tp) == [0, 0, 1] and list(fp) == [0, 0, 0]  # a difficult box absorbs any number
    rec, prec, n_pos = detection_pr(dets, gt, "a")
    assert n_pos == 1  # difficult boxes are not positives
    assert both_aps(dets, gt) == pytest.approx((1.0, 1.0))
    # had the difficult box been an ordinary one, the second detection would be a duplicate FP
    # and the first a TP: 2 positives, tp 1 0 1, fp 0 1 0 -> rec .5 .5 1, prec 1 .5 2/3
    plain = gt_of({"1": [DetObject("a", BOX), DetObject("a", (30, 30, 40, 40))]})
    ap11, area = both_aps(dets, plain)
    assert area == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert ap11 == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_best_box_is_chosen_among_all_boxes_including_difficult():
    # The detection overlaps a difficult box with IoU 1 and an ordinary box with IoU 100/120.
    # The devkit takes the difficult one (highest IoU) and ignores the detection, leaving the
    # ordinary box unmatched: recall 0, AP 0 -- not 1 as a matcher skipping difficult boxes
    # would give.
    gt = gt_of({"1": [DetObject("a", BOX, difficult=True), DetObject("a", (1, 1, 10, 12))]})
    dets = [("1", 0.9, *BOX)]
    assert iou_inclusive(BOX, (1, 1, 10, 12)) == pytest.approx(100 / 120)
    _, tp, fp = match_detections(dets, {"1": [BOX, (1, 1, 10, 12)]}, {"1": [True, False]})
    assert tp[0] == 0 and fp[0] == 0
    assert both_aps(dets, gt) == pytest.approx((0.0, 0.0))


def test_best_box_is_chosen_among_all_boxes_including_matched():
    # Two boxes: B1 = BOX and B2 = (1,1,10,14) (IoU with BOX = 100/140 >= .5).
    # d1 = BOX matches B1. d2 = BOX again: its best box is B1 (IoU 1), already matched, so it is
    # a duplicate FP even though B2 is free and overlaps enough.
    gt = gt_of({"1": [DetObject("a", BOX), DetObject("a", (1, 1, 10, 14))]})
    dets = [("1", 0.9, *BOX), ("1", 0.8, *BOX)]
    rec, prec, n_pos = detection_pr(dets, gt, "a")
    assert n_pos == 2
    np.testing.assert_allclose(rec, [0.5, 0.5])
    np.testing.assert_allclose(prec, [1, 0.5])
    # 11-pt: t = 0..0.5 reached by recall .5 (6 thresholds, t(6) is exactly 0.5) -> 6/11
    assert both_aps(dets, gt) == pytest.approx((6 / 11, 0.5))


def test_equal_ious_take_the_first_box():
    # the detection overlaps two boxes equally (IoU 1/2 each); the first listed is difficult,
    # so the detection is ignored; listed the other way round it is a TP
    left, right = (1, 1, 10, 10), (11, 1, 20, 10)
    det = [("1", 0.9, 6, 1, 15, 10)]
    assert iou_inclusive(det[0][2:], left) == iou_inclusive(det[0][2:], right)
    first_difficult = gt_of({"1": [DetObject("a", left, True), DetObject("a", right)]})
    second_difficult = gt_of({"1": [DetObject("a", right), DetObject("a", left, True)]})
    # that detection has IoU 50 / 150 = 1/3 with each: a false positive whichever box wins
    _, tp, fp = match_detections(det, {"1": [left, right]}, {"1": [True, False]})
    assert tp[0] == 0 and fp[0] == 1
    det = [("1", 0.9, 1, 1, 20, 10)]  # IoU with each box: 100 / 200 = 0.5 exactly
    assert both_aps(det, first_difficult) == pytest.approx((0.0, 0.0))
    assert both_aps(det, second_difficult) == pytest.approx((1.0, 1.0))


# ------------------------------------------------------------------------------ IoU threshold


def test_iou_exactly_half_inclusive_vs_strict():
    # det (1,1,10,20): 200 pixels containing BOX (100): IoU = 100/200 = 0.5 exactly
    det = [("1", 0.9, 1, 1, 10, 20)]
    assert iou_inclusive(det[0][2:], BOX) == 0.5
    devkit = gt_of({"1": [DetObject("a", BOX)]})
    strict = gt_of({"1": [DetObject("a", BOX)]}, strict=True)
    assert both_aps(det, devkit) == pytest.approx((1.0, 1.0))  # >= 0.5: TP
    assert both_aps(det, strict) == pytest.approx((0.0, 0.0))  # > 0.5: FP
    # just above 0.5 both agree
    det2 = [("1", 0.9, 1, 1, 10, 19)]  # 100 / 190
    assert both_aps(det2, strict) == pytest.approx((1.0, 1.0))


def test_other_classes_do_not_match():
    gt = gt_of({"1": [DetObject("b", BOX), DetObject("a", (50, 50, 60, 60))]}, classes=("a", "b"))
    dets = {"a": [("1", 0.9, *BOX)], "b": []}
    m = evaluate_detection(preds_of(dets, ["1"]), gt, "voc10-area")
    assert m.per_class == {"a": 0.0, "b": 0.0}


# ------------------------------------------------------------------------------ evaluate_detection


def test_evaluate_detection_by_hand_and_through_the_registry():
    objects = {
        "1": [DetObject("a", BOX), DetObject("b", (5, 5, 20, 20))],
        "2": [DetObject("a", (1, 1, 30, 30)), DetObject("c", BOX, difficult=True)],
    }
    gt = gt_of(objects, classes=("a", "b", "c"))
    dets = {
        "a": [("1", 0.9, *BOX), ("2", 0.8, 100, 100, 120, 120), ("2", 0.7, 1, 1, 30, 30)],
        "b": [("1", 0.4, 5, 5, 20, 20)],
        "c": [("2", 0.3, *BOX)],
    }
    p = preds_of(dets, ["1", "2"])
    m = evaluate_detection(p, gt, "voc10-area")
    # a: TP FP TP, 2 positives: rec .5 .5 1, prec 1 .5 2/3 -> area .5 + .5 * 2/3 = 5/6
    # b: TP -> 1 ; c: only a difficult object -> no positives -> NaN, out of the mean
    assert m.per_class["a"] == pytest.approx(5 / 6)
    assert m.per_class["b"] == 1.0
    assert math.isnan(m.per_class["c"])
    assert m.mean == pytest.approx((5 / 6 + 1) / 2)
    assert m.extra["n_classes_scored"] == 2
    # a with 11-pt: t = 0..0.5 -> 1 (6), t = .6..1 -> 2/3 (5)
    m11 = evaluate_detection(p, gt, "voc07-11pt")
    assert m11.per_class["a"] == pytest.approx((6 + 5 * 2 / 3) / 11)

    evaluators = {e.id: e for e in voc_ap.benchharness_evaluators()}
    via_registry = evaluators["voc10-area"].evaluate(p, gt)
    assert via_registry.per_class["a"] == pytest.approx(5 / 6)
    assert via_registry.metric == "voc10-area"


def test_evaluate_detection_errors():
    gt = gt_of({"1": [DetObject("a", BOX)]})
    with pytest.raises(ValueError, match="unrecognized image 'zzz'"):
        evaluate_detection(preds_of({"a": [("zzz", 0.5, *BOX)]}, ["1"]), gt, "voc07-11pt")
    with pytest.raises(ValueError, match="no detections list for class 'a'"):
        evaluate_detection(preds_of({"b": []}, ["1"]), gt, "voc07-11pt")
    with pytest.raises(ValueError, match="NaN"):
        evaluate_detection(preds_of({"a": [("1", float("nan"), *BOX)]}, ["1"]), gt, "voc07-11pt")
    with pytest.raises(ValueError, match="unknown detection metric"):
        evaluate_detection(preds_of({"a": []}, ["1"]), gt, "sklearn-ap")


def test_no_detections_gives_zero():
    gt = gt_of({"1": [DetObject("a", BOX)]})
    m = evaluate_detection(preds_of({"a": []}, ["1"]), gt, "voc07-11pt")
    assert m.per_class["a"] == 0.0 and m.mean == 0.0


# ------------------------------------------------------------------------------ reference loop


def _reference_ap(dets, boxes, difficult, strict, use_07):
    """A plain transcription of VOCevaldet.m + VOCap.m, written independently of voc_det."""
    confidence = np.array([d[1] for d in dets], dtype=float)
    si = sorted(range(len(dets)), key=lambda i: -confidence[i])  # Python's sort is stable
    det_flags = {k: np.zeros(len(v), bool) for k, v in boxes.items()}
    npos = sum(int((~np.asarray(v, bool)).sum()) for v in difficult.values())
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for d, i in enumerate(si):
        img, _, *bb = dets[i]
        ovmax, jmax = -np.inf, None
        for j, g in enumerate(boxes[img]):
            bi = [max(bb[0], g[0]), max(bb[1], g[1]), min(bb[2], g[2]), min(bb[3], g[3])]
            iw, ih = bi[2] - bi[0] + 1, bi[3] - bi[1] + 1
            if iw > 0 and ih > 0:
                ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (g[2] - g[0] + 1) * (g[3] - g[1] + 1) - iw * ih
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax, jmax = ov, j
        ok = ovmax > 0.5 if strict else ovmax >= 0.5
        if ok:
            if not difficult[img][jmax]:
                if not det_flags[img][jmax]:
                    tp[d] = 1
                    det_flags[img][jmax] = True
                else:
                    fp[d] = 1
        else:
            fp[d] = 1
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    rec = ctp / npos
    with np.errstate(invalid="ignore"):
        prec = ctp / (ctp + cfp)
    if use_07:
        ap = 0.0
        # MATLAB's 0:0.1:1: first half k*0.1, second half 1 - k*0.1, middle 0.5
        for t in [0 * .1, 1 * .1, 2 * .1, 3 * .1, 4 * .1, .5, 1 - 4 * .1, 1 - 3 * .1, 1 - 2 * .1, 1 - .1, 1.0]:
            p = prec[rec >= t]
            p = p[~np.isnan(p)]
            ap += (p.max() if p.size else 0) / 11
        return ap
    mrec = np.r_[0, rec, 1]
    mpre = np.r_[0, np.nan_to_num(prec, nan=0.0), 0]
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(((mrec[idx] - mrec[idx - 1]) * mpre[idx]).sum())


@pytest.mark.parametrize("strict", [False, True])
def test_matches_reference_loop_on_random_scenes(strict):
    rng = np.random.default_rng(1)
    for trial in range(40):
        ids = [f"{i:03d}" for i in range(int(rng.integers(1, 8)))]
        objects, boxes, difficult = {}, {}, {}
        for i in ids:
            objs = []
            for _ in range(int(rng.integers(0, 4))):
                x1, y1 = rng.integers(1, 40, size=2)
                w, h = rng.integers(1, 30, size=2)
                objs.append(DetObject("a", (int(x1), int(y1), int(x1 + w), int(y1 + h)),
                                      bool(rng.random() < 0.3)))
            objects[i] = objs
            boxes[i] = [o.box for o in objs]
            difficult[i] = [o.difficult for o in objs]
        if not any(not o.difficult for objs in objects.values() for o in objs):
            continue
        dets = []
        for _ in range(int(rng.integers(0, 25))):
            i = ids[int(rng.integers(len(ids)))]
            if boxes[i] and rng.random() < 0.7:  # jitter a true box
                b = np.array(boxes[i][int(rng.integers(len(boxes[i])))]) + rng.integers(-3, 4, size=4)
            else:
                x1, y1 = rng.integers(1, 40, size=2)
                b = np.array([x1, y1, x1 + rng.integers(1, 30), y1 + rng.integers(1, 30)])
            score = float(np.round(rng.random(), 1))  # many ties
            dets.append((i, score, *(int(v) for v in b)))
        gt = DetGroundTruth(["a"], ids, objects, iou_strict=strict)
        ap11, area = both_aps(dets, gt)
        assert ap11 == pytest.approx(_reference_ap(dets, boxes, difficult, strict, True), abs=1e-9)
        assert area == pytest.approx(_reference_ap(dets, boxes, difficult, strict, False), abs=1e-9)


def test_columns_and_tuples_give_the_same_aps():
    rng = np.random.default_rng(5)
    ids = [f"{i:03d}" for i in range(30)]
    objects = {i: [DetObject(str(rng.choice(["a", "b"])), (5, 5, 40, 40), bool(rng.random() < 0.2))]
               for i in ids}
    gt = gt_of(objects, classes=("a", "b"))
    tuples = {c: [(ids[int(k)], float(np.round(rng.random(), 1)), *(5 + rng.integers(-6, 7, 2)),
                   *(40 + rng.integers(-6, 7, 2))) for k in rng.integers(0, 30, 60)] for c in "ab"}
    index_of = {image_id: k for k, image_id in enumerate(ids)}
    columns = {c: ClassDetections.from_tuples(d, index_of, c) for c, d in tuples.items()}
    assert columns["a"].tuples(ids) == [tuple(float(v) if k else v for k, v in enumerate(d))
                                        for d in tuples["a"]]
    for metric in ("voc07-11pt", "voc10-area"):
        a = evaluate_detection(preds_of(tuples, ids), gt, metric)
        b = evaluate_detection(preds_of(columns, ids), gt, metric)
        assert a.per_class == b.per_class and 0 < a.mean < 1
    # the predictions may list their images in another order than the ground truth
    shuffled = ids[::-1]
    reindexed = {c: ClassDetections(len(ids) - 1 - d.image_index, d.scores, d.boxes)
                 for c, d in columns.items()}
    assert evaluate_detection(preds_of(reindexed, shuffled), gt, "voc07-11pt").per_class == \
        evaluate_detection(preds_of(tuples, ids), gt, "voc07-11pt").per_class


def test_column_errors():
    gt = gt_of({"1": [DetObject("a", BOX)]})
    bad = ClassDetections([1], [0.5], [BOX])
    with pytest.raises(ValueError, match="unrecognized image 'zzz'"):
        evaluate_detection(preds_of({"a": bad}, ["1", "zzz"]), gt, "voc07-11pt")
    with pytest.raises(ValueError, match="NaN score"):
        evaluate_detection(preds_of({"a": ClassDetections([0], [np.nan], [BOX])}, ["1"]), gt,
                           "voc07-11pt")
    with pytest.raises(ValueError, match="differ in length"):
        ClassDetections([0, 0], [0.5], [BOX])
    with pytest.raises(ValueError, match="must be"):
        ClassDetections.from_tuples([("1", 0.5, 1, 1, 2)], {"1": 0})
