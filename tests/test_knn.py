"""k-nearest-neighbour classification (tasks/knn.py) and its use by voc07-cls: neighbours and
votes against hand computations and a brute-force search, AP of the votes by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchharness.evaluators.voc_ap import evaluate_ap
from benchharness.interfaces import ClsGroundTruth, Predictions
from benchharness.tasks.knn import (KNN_PROTOCOLS, check_knn_settings, cosine_neighbours, knn_scores,
                                    knn_stage, neighbour_votes)

# four training images in 2-D, two classes (multi-label), three test images
TRAIN = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
TRAIN_POSITIVE = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=bool)
TEST = np.array([[2.0, 0.0], [0.0, 3.0], [3.0, 1.0]])
R2 = 2 ** -0.5  # cos((1, 1), (1, 0))


def test_protocol_names_are_knn_and_a_stage():
    assert KNN_PROTOCOLS == ("knn-conv1", "knn-conv2", "knn-conv3", "knn-conv4", "knn-conv5",
                             "knn-fc6", "knn-fc7")
    assert knn_stage("knn-fc7") == "fc7" and knn_stage("knn-conv3") == "conv3"
    with pytest.raises(ValueError, match="not a k-NN protocol"):
        knn_stage("knn-pool5")


def test_neighbours_are_the_most_cosine_similar_training_rows():
    sim, idx = cosine_neighbours(TRAIN, TEST, k=2)
    # q0 = (2, 0): t0 (cos 1), then t2 (cos 1/sqrt 2); t3 points the other way (cos -1)
    # q2 = (3, 1): t0 (3/sqrt 10), t2 (4/sqrt 20), t1 only 1/sqrt 10
    assert idx.tolist() == [[0, 2], [1, 2], [0, 2]]
    torch.testing.assert_close(sim, torch.tensor([[1.0, R2], [1.0, R2],
                                                  [3 / 10 ** 0.5, 4 / 20 ** 0.5]]))


def test_chunked_search_equals_a_brute_force_argsort():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(53, 7)), rng.normal(size=(11, 7))
    sim, idx = cosine_neighbours(train, test, k=5, chunk=4, block=3)  # many chunks and blocks
    cos = (test / np.linalg.norm(test, axis=1, keepdims=True)) @ \
        (train / np.linalg.norm(train, axis=1, keepdims=True)).T
    expected = np.argsort(-cos, axis=1)[:, :5]
    assert idx.numpy().tolist() == expected.tolist()
    np.testing.assert_allclose(sim.numpy(), np.take_along_axis(cos, expected, 1), rtol=1e-5)


def test_similarity_votes_by_hand():
    scores = knn_scores(TRAIN, TRAIN_POSITIVE, TEST, n_classes=2, k=2, weighting="similarity")
    a, b = 3 / 10 ** 0.5, 4 / 20 ** 0.5
    np.testing.assert_allclose(scores, [[1 + R2, R2], [R2, 1 + R2], [a + b, b]], rtol=1e-6)
    uniform = knn_scores(TRAIN, TRAIN_POSITIVE, TEST, n_classes=2, k=2, weighting="uniform")
    np.testing.assert_array_equal(uniform, [[2, 1], [1, 2], [2, 1]])  # counts of positive neighbours


def test_single_label_votes_pick_the_nearest_or_the_majority():
    targets = np.array([2, 1, 1, 0])
    sim, idx = cosine_neighbours(TRAIN, TEST, k=1)
    one_nn = neighbour_votes(sim, idx, targets, n_classes=3, weighting="uniform")
    assert one_nn.argmax(1).tolist() == [2, 1, 2]  # the nearest training image's class
    sim, idx = cosine_neighbours(TRAIN, TEST, k=3)
    votes = neighbour_votes(sim, idx, targets, n_classes=3, weighting="uniform")
    # q0's three nearest: t0 (class 2), t2 (1), t1 (1; cos 0 beats t3's -1): class 1 by two votes
    np.testing.assert_array_equal(votes[0], [0, 2, 1])


def test_knn_ap_equals_the_hand_computation():
    scores = knn_scores(TRAIN, TRAIN_POSITIVE, TEST, n_classes=2, k=2, weighting="similarity")
    labels = np.array([[1, -1], [-1, 1], [-1, 1]], dtype=np.int8)
    ids, classes = ["q0", "q1", "q2"], ("a", "b")
    gt = ClsGroundTruth(classes, ids, labels)
    # class a ranks q2 (negative, 1.84), q0 (positive, 1.71), q1: precision 1/2 at recall 1
    # -> AP 0.5 under every definition; class b ranks q1, q2 (both positive), q0 -> AP 1
    for metric in ("voc07-11pt", "sklearn-ap", "voc10-area"):
        result = evaluate_ap(Predictions("cls", classes, ids, scores=scores), gt, metric)
        assert result.per_class == pytest.approx({"a": 0.5, "b": 1.0})
        assert result.mean == pytest.approx(0.75)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="k = 5 nearest neighbours asked among 4"):
        cosine_neighbours(TRAIN, TEST, k=5)
    with pytest.raises(ValueError, match="voc07-cls: knn_k must be at least 1"):
        check_knn_settings("voc07-cls", 0, "similarity")
    with pytest.raises(ValueError, match="unknown knn_weighting 'softmax'"):
        check_knn_settings("voc07-cls", 3, "softmax")
