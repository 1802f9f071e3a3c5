"""The top1/top5 evaluators of single-label predictions and their export, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import top_k_accuracy_score

from benchharness.evaluators.topk import evaluate_top_k
from benchharness.export import export_predictions
from benchharness.interfaces import LabelGroundTruth, Predictions
from benchharness.plugins import Registry

CLASSES = ("a", "b", "c", "d", "e", "f")
IDS = ["i0", "i1", "i2", "i3"]
SCORES = np.array([
    [9, 1, 2, 3, 4, 5],   # true a: best -> top-1 and top-5 hit
    [9, 8, 7, 6, 5, 4],   # true f: the worst of six -> miss in both
    [1, 2, 6, 5, 4, 3],   # true d: second best -> top-5 hit only
    [0, 0, 0, 0, 0, 0],   # true b: all tied -> ranked a, b, c, d, e: top-1 miss, top-5 hit
], dtype=float)
TARGETS = np.array([0, 5, 3, 1])


def _pred(scores=SCORES, ids=IDS, kind="label"):
    return Predictions(kind, CLASSES, ids, scores=scores)


def test_top1_and_top5_by_hand():
    gt = LabelGroundTruth(CLASSES, IDS, TARGETS)
    top1, top5 = evaluate_top_k(_pred(), gt, "top1"), evaluate_top_k(_pred(), gt, "top5")
    assert top1.mean == pytest.approx(1 / 4) and top5.mean == pytest.approx(3 / 4)
    nan = float("nan")
    assert top1.per_class == pytest.approx({"a": 1, "b": 0, "c": nan, "d": 0, "e": nan, "f": 0}, nan_ok=True)
    assert top5.per_class == pytest.approx({"a": 1, "b": 1, "c": nan, "d": 1, "e": nan, "f": 0}, nan_ok=True)


def test_images_and_classes_are_matched_by_name():
    rows, columns = [2, 0, 1], [5, 4, 3, 2, 1, 0]  # other image and class orders than the truth's
    shuffled = Predictions("label", tuple(CLASSES[c] for c in columns), [IDS[i] for i in rows],
                           scores=SCORES[np.ix_(rows, columns)])
    gt = LabelGroundTruth(CLASSES, IDS[:3], TARGETS[:3])
    assert evaluate_top_k(shuffled, gt, "top1").mean == pytest.approx(1 / 3)
    assert evaluate_top_k(shuffled, gt, "top5").mean == pytest.approx(2 / 3)


def test_agrees_with_sklearn_without_ties():
    rng = np.random.default_rng(0)
    scores, targets = rng.normal(size=(200, 10)), rng.integers(0, 10, 200)
    names = tuple(f"c{i}" for i in range(10))
    ids = [f"x{i}" for i in range(200)]
    for metric, k in (("top1", 1), ("top5", 5)):
        ours = evaluate_top_k(Predictions("label", names, ids, scores=scores),
                              LabelGroundTruth(names, ids, targets), metric).mean
        assert ours == pytest.approx(top_k_accuracy_score(targets, scores, k=k, labels=range(10)))


def test_bad_input_is_named():
    gt = LabelGroundTruth(CLASSES, IDS, TARGETS)
    with pytest.raises(ValueError, match="kind 'label'"):
        evaluate_top_k(_pred(kind="cls"), gt, "top1")
    with pytest.raises(ValueError, match="no prediction for image 'i3'"):
        evaluate_top_k(_pred(SCORES[:3], IDS[:3]), gt, "top1")
    with pytest.raises(ValueError, match="image 'i1' has target 6, outside the 6 classes"):
        evaluate_top_k(_pred(), LabelGroundTruth(CLASSES, IDS, np.array([0, 6, 3, 1])), "top1")
    with pytest.raises(ValueError, match="NaN"):
        evaluate_top_k(_pred(np.where(SCORES == 9, np.nan, SCORES)), gt, "top1")


def test_registered_for_label_predictions_only():
    evaluators = Registry(load_entry_points=False).evaluators()
    assert evaluators["top1"].kinds == ("label",) and evaluators["top5"].kinds == ("label",)
    assert "label" not in evaluators["voc07-11pt"].kinds


def test_export_lists_the_five_best_classes(tmp_path):
    [path] = export_predictions(_pred(), tmp_path, "val")
    assert path.name == "top5_val.txt"
    assert path.read_text().splitlines() == ["i0 a f e d c", "i1 a b c d e", "i2 c d e f b",
                                             "i3 a b c d e"]
