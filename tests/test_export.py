"""Writing predictions in the VOC results formats (benchharness.export) and reading them back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchharness.data.voc.classes import VOC_PALETTE
from benchharness.evaluators.results_files import (
    read_cls_results,
    read_det_results,
    read_seg_results,
)
from benchharness.export import export_predictions
from benchharness.interfaces import Predictions


def test_cls_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4, 2)).astype(np.float32)  # float32 scores as a network gives
    scores[0, 0] = 3.0
    p = Predictions("cls", ["cat", "dog"], ["a", "b", "c", "d"], scores=scores)
    written = export_predictions(p, tmp_path, "test")
    assert sorted(f.name for f in written) == ["comp1_cls_test_cat.txt", "comp1_cls_test_dog.txt"]
    lines = (tmp_path / "comp1_cls_test_cat.txt").read_text().splitlines()
    assert lines[0] == "a 3" and [ln.split()[0] for ln in lines] == ["a", "b", "c", "d"]
    back = read_cls_results(tmp_path, "test", ["cat", "dog"], ["a", "b", "c", "d"])
    np.testing.assert_array_equal(back.scores, scores.astype(np.float64))


def test_det_round_trip_keeps_order_and_values(tmp_path):
    dets = {"cat": [("a", 0.5, 1, 2, 30, 40), ("b", 0.5, 1.5, 2.25, 3.125, 4), ("a", 0.1 + 0.2, 5, 5, 9, 9)],
            "dog": []}
    p = Predictions("det", ["cat", "dog"], ["a", "b"], detections=dets)
    export_predictions(p, tmp_path, "val")
    assert (tmp_path / "comp3_det_val_dog.txt").read_text() == ""
    assert (tmp_path / "comp3_det_val_cat.txt").read_text().splitlines()[0] == "a 0.5 1 2 30 40"
    back = read_det_results(tmp_path, "val", ["cat", "dog"], ["a", "b"])
    assert back.detections == {k: [tuple(float(x) if i else x for i, x in enumerate(d)) for d in v]
                               for k, v in dets.items()}


def test_seg_round_trip_palette_png(tmp_path):
    masks = {"x": np.array([[0, 1, 20], [255, 2, 0]], dtype=np.uint8),
             "y": np.zeros((5, 3), dtype=np.int64)}
    p = Predictions("seg", ["background"] + [f"c{i}" for i in range(1, 21)], ["x", "y"], masks=masks)
    export_predictions(p, tmp_path, "val")
    with Image.open(tmp_path / "x.png") as image:
        assert image.mode == "P" and image.size == (3, 2)
        assert image.getpalette()[:3 * 21] == VOC_PALETTE[:3 * 21]
    back = read_seg_results(tmp_path, ["x", "y"], p.class_names)
    np.testing.assert_array_equal(back.masks["x"], masks["x"])
    np.testing.assert_array_equal(back.masks["y"], masks["y"])


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="image id 'a b'"):
        export_predictions(Predictions("cls", ["c"], ["a b"], scores=np.zeros((1, 1))), tmp_path, "t")
    with pytest.raises(ValueError, match="shape"):
        export_predictions(Predictions("cls", ["c"], ["a"], scores=np.zeros((2, 1))), tmp_path, "t")
    with pytest.raises(ValueError, match="unknown predictions kind"):
        export_predictions(Predictions("video", ["c"], ["a"]), tmp_path, "t")
    with pytest.raises(ValueError, match="outside 0..255"):
        export_predictions(Predictions("seg", ["c"], ["a"], masks={"a": np.full((2, 2), 300)}),
                           tmp_path, "t")
