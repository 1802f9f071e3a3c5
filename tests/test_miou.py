"""FCN-style segmentation metrics (benchharness.evaluators.miou), checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchharness.evaluators import miou
from benchharness.evaluators.miou import confusion_matrix, evaluate_miou, scores_from_confusion
from benchharness.interfaces import Predictions, SegGroundTruth

CLASSES = ["background", "a", "b", "c"]
GT = {
    "1": np.array([[0, 0, 1, 1], [0, 255, 1, 1]], dtype=np.uint8),
    "2": np.array([[2, 2], [0, 0]], dtype=np.uint8),
}
PRED = {
    "1": np.array([[0, 1, 1, 1], [0, 2, 1, 0]], dtype=np.uint8),  # the 2 falls on the 255 pixel
    "2": np.array([[2, 0], [0, 0]], dtype=np.uint8),
}


def seg_gt(masks=GT, lazy=False):
    return SegGroundTruth(CLASSES, list(masks), (lambda i: masks[i]) if lazy else dict(masks))


def seg_preds(masks=PRED):
    return Predictions(kind="seg", class_names=CLASSES, image_ids=list(masks), masks=dict(masks))


def test_confusion_matrix_by_hand():
    # scored pixels (gt, pred): image 1 row 0: (0,0) (0,1) (1,1) (1,1); row 1: (0,0) [255] (1,1) (1,0)
    #                            image 2: (2,2) (2,0) (0,0) (0,0)
    hist = confusion_matrix(GT["1"], PRED["1"], 4) + confusion_matrix(GT["2"], PRED["2"], 4)
    np.testing.assert_array_equal(hist, [[4, 1, 0, 0], [1, 3, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])


def test_metrics_by_hand():
    m = evaluate_miou(seg_preds(), seg_gt())
    # diag 4 3 1, rows 5 4 2 0, columns 6 4 1 0, 11 scored pixels
    assert m.metric == "miou"
    assert m.extra["pixel_acc"] == pytest.approx(8 / 11)
    assert m.extra["mean_acc"] == pytest.approx((4 / 5 + 3 / 4 + 1 / 2) / 3)
    iou = {"background": 4 / 7, "a": 3 / 5, "b": 1 / 2}
    for name, value in iou.items():
        assert m.per_class[name] == pytest.approx(value)
    # c is absent from ground truth and prediction: skipped
    assert math.isnan(m.per_class["c"])
    assert m.mean == pytest.approx(sum(iou.values()) / 3)
    assert m.extra["fw_iou"] == pytest.approx(5 / 11 * 4 / 7 + 4 / 11 * 3 / 5 + 2 / 11 * 1 / 2)
    assert m.extra["n_classes_scored"] == 3


def test_ignored_pixels_do_not_count_whatever_is_predicted():
    other = dict(PRED)
    other["1"] = PRED["1"].copy()
    other["1"][1, 1] = 3  # the pixel whose ground truth is 255
    assert evaluate_miou(seg_preds(other), seg_gt()).per_class == pytest.approx(
        evaluate_miou(seg_preds(), seg_gt()).per_class, nan_ok=True)
    # 255 in the prediction on an ignored pixel is fine too
    other["1"][1, 1] = 255
    assert evaluate_miou(seg_preds(other), seg_gt()).mean == pytest.approx(
        evaluate_miou(seg_preds(), seg_gt()).mean)


def test_class_predicted_but_absent_from_ground_truth_counts_as_zero():
    other = dict(PRED)
    other["2"] = np.array([[2, 3], [0, 0]], dtype=np.uint8)  # the former (2,0) pixel -> (2,3)
    m = evaluate_miou(seg_preds(other), seg_gt())
    # hist rows: background [4,1,0,0], a [1,3,0,0], b [0,0,1,1]; columns 5 4 1 1
    # IoU c = 0 / (0 + 1 - 0) = 0, and it enters the mean
    assert m.per_class["c"] == 0.0
    iou_bg = 4 / (5 + 5 - 4)
    iou_a = 3 / (4 + 4 - 3)
    iou_b = 1 / (2 + 1 - 1)
    assert m.mean == pytest.approx((iou_bg + iou_a + iou_b + 0) / 4)
    # mean class accuracy still skips c (no ground-truth pixel)
    assert m.extra["mean_acc"] == pytest.approx((4 / 5 + 3 / 4 + 1 / 2) / 3)


def test_one_matrix_over_the_split_not_a_mean_of_images():
    # per-image mIoU averaged would differ: the split-wide matrix is what FCN reports
    split = evaluate_miou(seg_preds(), seg_gt()).mean
    per_image = [evaluate_miou(seg_preds({i: PRED[i]}), seg_gt({i: GT[i]})).mean for i in GT]
    assert split != pytest.approx(np.mean(per_image))


def test_lazy_ground_truth_and_perfect_prediction():
    perfect = {i: np.where(g == 255, 0, g).astype(np.uint8) for i, g in GT.items()}
    m = evaluate_miou(seg_preds(perfect), seg_gt(lazy=True))
    assert m.mean == 1.0 and m.extra["pixel_acc"] == 1.0 and m.extra["fw_iou"] == pytest.approx(1.0)


def test_errors_name_the_image():
    wrong = dict(PRED)
    wrong["2"] = np.zeros((3, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="image '2'.*shape"):
        evaluate_miou(seg_preds(wrong), seg_gt())
    with pytest.raises(ValueError, match="no predicted mask for image '2'"):
        evaluate_miou(seg_preds({"1": PRED["1"]}), seg_gt())
    with pytest.raises(ValueError, match="unrecognized image 'x'"):
        evaluate_miou(seg_preds({**PRED, "x": PRED["2"]}), seg_gt())
    bad = dict(PRED)
    bad["2"] = np.array([[7, 0], [0, 0]], dtype=np.uint8)
    with pytest.raises(ValueError, match="image '2'.*label 7"):
        evaluate_miou(seg_preds(bad), seg_gt())


def test_scores_from_confusion_agree_with_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, size=(40, 50)).astype(np.uint8)
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, 5, size=gt.shape)).astype(np.uint8)
    pred[gt == 255] = rng.integers(0, 5, size=int((gt == 255).sum()))
    hist = confusion_matrix(gt, pred, 5)
    keep = gt != 255
    np.testing.assert_array_equal(hist, metrics.confusion_matrix(gt[keep], pred[keep], labels=range(5)))
    s = scores_from_confusion(hist)
    jac = metrics.jaccard_score(gt[keep], pred[keep], labels=range(5), average=None)
    np.testing.assert_allclose(s["iou"], jac, atol=1e-12)
    assert s["pixel_acc"] == pytest.approx(metrics.accuracy_score(gt[keep], pred[keep]))
    assert s["mean_acc"] == pytest.approx(metrics.balanced_accuracy_score(gt[keep], pred[keep]))


def test_hook_registers_miou():
    (e,) = miou.benchharness_evaluators()
    assert e.id == "miou" and e.kinds == ("seg",)
    assert e.evaluate(seg_preds(), seg_gt()).metric == "miou"
