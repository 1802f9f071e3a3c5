"""AP definitions of benchharness.evaluators.voc_ap, checked on cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pluggy
import pytest

from benchharness import hookspecs
from benchharness.evaluators import voc_ap
from benchharness.evaluators.voc_ap import (
    ap_sklearn,
    ap_voc07_11pt,
    ap_voc10_area,
    classification_pr,
    cumulative_pr,
    evaluate_classification,
)
from benchharness.interfaces import ClsGroundTruth, Evaluator, Predictions

DESC5 = np.array([0.9, 0.8, 0.7, 0.6, 0.5])


def all_three(scores, labels):
    rec, prec = classification_pr(scores, labels)
    keep = np.asarray(labels) != 0
    return (
        ap_voc07_11pt(rec, prec),
        ap_voc10_area(rec, prec),
        ap_sklearn(np.asarray(scores)[keep], np.asarray(labels)[keep]),
    )


def test_pr_curve_by_hand():
    # sorted labels + - + - +, 3 positives
    # cum tp 1 1 2 2 3, cum fp 0 1 1 2 2
    rec, prec = classification_pr(DESC5, [1, -1, 1, -1, 1])
    np.testing.assert_allclose(rec, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(prec, [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])


def test_pr_sorts_by_score_descending():
    # same images as above, given in scrambled order
    perm = [3, 0, 4, 2, 1]
    scores = DESC5[perm]
    labels = np.array([1, -1, 1, -1, 1])[perm]
    rec, prec = classification_pr(scores, labels)
    np.testing.assert_allclose(prec, [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])


def test_eleven_point_vs_area_by_hand():
    # Curve of test_pr_curve_by_hand.
    # 11-pt: t = 0, .1, .2, .3 -> max prec over rec>=t = 1          (4 thresholds)
    #        t = .4, .5, .6   -> points rec 2/3, 2/3, 1 -> max 2/3   (3 thresholds)
    #        t = .7 .. 1      -> only rec 1 -> 3/5                   (4 thresholds)
    #        AP = (4*1 + 3*2/3 + 4*3/5) / 11 = 8.4 / 11
    # area:  envelope at the recall steps 0->1/3: 1, 1/3->2/3: 2/3, 2/3->1: 3/5
    #        AP = 1/3 + 2/9 + 1/5 = 34/45
    # sklearn: precision at each positive, averaged = (1 + 2/3 + 3/5)/3 = 34/45
    ap11, area, sk = all_three(DESC5, [1, -1, 1, -1, 1])
    assert ap11 == pytest.approx(8.4 / 11)
    assert area == pytest.approx(34 / 45)
    assert sk == pytest.approx(34 / 45)


def test_three_definitions_all_differ():
    # sorted labels + - - + +, 3 positives
    # rec 1/3 1/3 1/3 2/3 1 ; prec 1 1/2 1/3 1/2 3/5
    # sklearn: (1 + 1/2 + 3/5) / 3 = 0.7
    # area:    1/3*1 + 1/3*max(1/2, 3/5) + 1/3*3/5 = 1/3 + 2/5 = 11/15
    # 11-pt:   t <= .3 (4 thresholds): 1 ; t >= .4 (7 thresholds): 3/5 -> (4 + 4.2)/11
    ap11, area, sk = all_three(DESC5, [1, -1, -1, 1, 1])
    assert sk == pytest.approx(0.7)
    assert area == pytest.approx(11 / 15)
    assert ap11 == pytest.approx(8.2 / 11)
    assert len({round(ap11, 6), round(area, 6), round(sk, 6)}) == 3


def test_perfect_and_worst_ranking():
    assert all_three([3, 2, 1], [1, 1, -1]) == pytest.approx((1.0, 1.0, 1.0))
    # one positive ranked last of 4: precision 1/4 at recall 1
    # 11-pt: every t reached only by rec=1 -> 1/4; area 1/4; sklearn 1/4
    assert all_three([4, 3, 2, 1], [-1, -1, -1, 1]) == pytest.approx((0.25, 0.25, 0.25))


def test_ties_grouped_by_sklearn_but_ordered_by_voc():
    # scores .9 .5 .5 .1 ; labels + - + -  (the tied negative comes first in input order)
    # sklearn: thresholds .9 -> R=1/2 P=1 ; .5 -> R=1 P=2/3 ; AP = 1/2 + 1/3 = 5/6
    # VOC (stable sort, negative first at the tie): rec .5 .5 1 1, prec 1 .5 2/3 .5
    #     area = .5*1 + .5*2/3 = 5/6
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    labels = np.array([1, -1, 1, -1])
    _, area, sk = all_three(scores, labels)
    assert sk == pytest.approx(5 / 6)
    assert area == pytest.approx(5 / 6)
    # Swap the tied images: VOC now ranks the positive first -> rec .5 1 1 1, prec 1 1 2/3 .5
    #     area = 1 ; sklearn is unchanged because the tie is one threshold.
    swapped = [0, 2, 1, 3]
    _, area2, sk2 = all_three(scores[swapped], labels[swapped])
    assert area2 == pytest.approx(1.0)
    assert sk2 == pytest.approx(5 / 6)


def test_sklearn_all_tied():
    # one threshold holding everything: R=1, P = 2/5
    assert ap_sklearn([1, 1, 1, 1, 1], [1, 0, 0, 1, 0]) == pytest.approx(0.4)
    assert ap_sklearn([1, 1, 1, 1, 1], [1, -1, -1, 1, -1]) == pytest.approx(0.4)


def test_difficult_images_are_dropped():
    # the top-scored image is difficult: dropped, leaving + - -> perfect ranking
    rec, prec = classification_pr([0.9, 0.8, 0.7], [0, 1, -1])
    np.testing.assert_allclose(rec, [1, 1])
    np.testing.assert_allclose(prec, [1, 1 / 2])
    assert all_three([0.9, 0.8, 0.7], [0, 1, -1]) == pytest.approx((1.0, 1.0, 1.0))
    # had it counted as a negative, AP would be 1/2 under all three definitions
    assert all_three([0.9, 0.8, 0.7], [-1, 1, -1]) == pytest.approx((0.5, 0.5, 0.5))


def test_eleven_point_thresholds_follow_matlab():
    # MATLAB's 0:0.1:1 has t(8) == 0.7 exactly, so recall 0.7 reaches 8 thresholds (0 .. 0.7);
    # np.arange would give 0.7000000000000001 and only 7.
    assert ap_voc07_11pt([0.7], [1.0]) == pytest.approx(8 / 11)
    # ...whereas t(4) is 0.30000000000000004 in MATLAB too: recall 0.3 reaches only 0, .1, .2.
    assert ap_voc07_11pt([0.3], [1.0]) == pytest.approx(3 / 11)


def test_empty_and_no_positive_curves():
    assert ap_voc07_11pt([], []) == 0.0
    assert ap_voc10_area([], []) == 0.0
    rec, prec = classification_pr([0.5, 0.4], [-1, -1])
    assert np.isnan(rec).all()
    assert math.isnan(ap_sklearn([0.5, 0.4], [0, 0]))


def test_cumulative_pr_for_detection_reuse():
    # detections already sorted: TP FP TP with 4 ground-truth objects (2 never found)
    rec, prec = cumulative_pr([1, 0, 1], [0, 1, 0], n_pos=4)
    np.testing.assert_allclose(rec, [0.25, 0.25, 0.5])
    np.testing.assert_allclose(prec, [1, 0.5, 2 / 3])
    # 11-pt: t=0..0.2 -> 1 (3), t=.3 .4 .5 -> 2/3 (3), t>=.6 -> 0 (5): (3 + 2)/11
    assert ap_voc07_11pt(rec, prec) == pytest.approx(5 / 11)
    # area: .25*1 + .25*2/3 + .5*0
    assert ap_voc10_area(rec, prec) == pytest.approx(0.25 + 1 / 6)


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError):
        ap_voc07_11pt([0.1, 0.2], [1.0])
    with pytest.raises(ValueError):
        classification_pr([0.1, 0.2], [1])


# ---------------------------------------------------------------- evaluate_classification


def _gt():
    # classes a, b over 5 images; class c has no positive at all
    labels = np.array(
        [
            [1, -1, -1],
            [-1, 1, -1],
            [1, 0, -1],
            [-1, -1, -1],
            [1, 1, -1],
        ],
        dtype=np.int8,
    )
    return ClsGroundTruth(class_names=["a", "b", "c"], image_ids=list("01234"), labels=labels)


def _preds(order=(0, 1, 2, 3, 4), class_order=("a", "b", "c")):
    # per-class score columns, by image 0..4
    cols = {
        "a": [0.9, 0.8, 0.7, 0.6, 0.5],  # a: + - + - +  -> as test_pr_curve_by_hand
        "b": [0.1, 0.9, 0.99, 0.3, 0.2],  # b: image 2 difficult; ranking 1(+) 3(-) 4(+) 0(-)
        "c": [0.1, 0.2, 0.3, 0.4, 0.5],
    }
    scores = np.array([[cols[c][i] for c in class_order] for i in order])
    return Predictions(
        kind="cls", class_names=list(class_order), image_ids=[str(i) for i in order], scores=scores
    )


def test_evaluate_classification_by_hand():
    m = evaluate_classification(_preds(), _gt(), "voc10-area")
    # a: 34/45 (see test_eleven_point_vs_area_by_hand)
    # b: difficult image 2 dropped; sorted + - + -: rec .5 .5 1 1, prec 1 .5 2/3 .5
    #    area = .5 + .5*2/3 = 5/6
    assert m.metric == "voc10-area"
    assert m.per_class["a"] == pytest.approx(34 / 45)
    assert m.per_class["b"] == pytest.approx(5 / 6)
    # c has no positives: NaN, left out of the mean
    assert math.isnan(m.per_class["c"])
    assert m.mean == pytest.approx((34 / 45 + 5 / 6) / 2)
    assert m.extra["n_classes_scored"] == 2
    assert 0.0 <= m.mean <= 1.0

    m11 = evaluate_classification(_preds(), _gt(), "voc07-11pt")
    assert m11.per_class["a"] == pytest.approx(8.4 / 11)
    msk = evaluate_classification(_preds(), _gt(), "sklearn-ap")
    assert msk.per_class["b"] == pytest.approx(5 / 6)


def test_evaluate_aligns_images_and_classes():
    base = evaluate_classification(_preds(), _gt(), "voc07-11pt")
    shuffled = evaluate_classification(
        _preds(order=(4, 2, 0, 3, 1), class_order=("c", "a", "b")), _gt(), "voc07-11pt"
    )
    assert shuffled.mean == pytest.approx(base.mean)
    for name in ("a", "b"):
        assert shuffled.per_class[name] == pytest.approx(base.per_class[name])


def test_evaluate_missing_or_unknown_image():
    with pytest.raises(ValueError, match="'3'"):
        evaluate_classification(_preds(order=(0, 1, 2, 4)), _gt(), "voc07-11pt")
    p = _preds()
    p.image_ids = p.image_ids + ["zzz"]  # an image the ground truth does not know
    p.scores = np.vstack([p.scores, p.scores[:1]])
    with pytest.raises(ValueError, match="zzz"):
        evaluate_classification(p, _gt(), "voc07-11pt")
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_classification(_preds(), _gt(), "nope")


def test_hook_registers_three_cls_evaluators():
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(voc_ap)
    evaluators = [e for lst in pm.hook.benchharness_evaluators() for e in lst]
    assert {e.id for e in evaluators} == {"voc07-11pt", "voc10-area", "sklearn-ap"}
    kinds = {e.id: e.kinds for e in evaluators}
    assert kinds == {"voc07-11pt": ("cls", "det"), "voc10-area": ("cls", "det"),
                     "sklearn-ap": ("cls",)}
    for e in evaluators:
        assert isinstance(e, Evaluator) and "cls" in e.kinds
        m = e.evaluate(_preds(), _gt())
        assert m.metric == e.id and 0 <= m.mean <= 1


def test_evaluator_refuses_kinds_it_does_not_score():
    sk = {e.id: e for e in voc_ap.benchharness_evaluators()}["sklearn-ap"]
    det = Predictions(kind="det", class_names=["a"], image_ids=["0"], detections={"a": []})
    with pytest.raises(ValueError, match="sklearn-ap scores cls predictions, not 'det'"):
        sk.evaluate(det, None)
    with pytest.raises(ValueError, match="kinds"):
        Evaluator(id="x", kinds=("video",), evaluate=lambda p, g: None)
    assert Evaluator(id="x", kinds="seg", evaluate=lambda p, g: None).kinds == ("seg",)


def test_matches_sklearn_on_random_data():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(2, 60))
        targets = rng.integers(0, 2, size=n)
        if targets.sum() == 0:
            targets[0] = 1
        scores = rng.normal(size=n) + targets * rng.uniform(0, 2)
        if trial % 2:  # many ties
            scores = np.round(scores, 1)
        expected = metrics.average_precision_score(targets, scores)
        assert ap_sklearn(scores, targets) == pytest.approx(expected, abs=1e-6)
