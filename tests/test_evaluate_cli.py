"""`benchharness evaluate` on VOC results files: by hand on a hand-written devkit, error paths,
and the round trip predictions -> export -> evaluate -> the same number on the tiny world."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from benchharness.cli import main
from benchharness.data.voc.classes import VOC_CLASSES
from benchharness.data.voc.devkit import VOCDevkit, locate_devkit
from benchharness.evaluators.ground_truth import (
    SEG_CLASSES,
    cls_ground_truth,
    det_ground_truth,
    seg_ground_truth,
)
from benchharness.export import export_predictions
from benchharness.interfaces import Predictions
from benchharness.plugins import get_registry

# image id -> [(class, box, difficult)]
OBJECTS = {
    "000001": [("aeroplane", (1, 1, 10, 10), False), ("person", (20, 20, 40, 40), False)],
    "000002": [("aeroplane", (1, 1, 10, 10), True)],
    "000003": [("dog", (5, 5, 50, 50), False)],
}
SEG_MASKS = {
    "2012_a": np.array([[0, 0, 1, 1], [0, 255, 1, 1]], dtype=np.uint8),
    "2012_b": np.array([[15, 15], [0, 0]], dtype=np.uint8),
}


def _write_devkit(root):
    voc07 = root / "VOCdevkit" / "VOC2007"
    (voc07 / "Annotations").mkdir(parents=True)
    main_dir = voc07 / "ImageSets" / "Main"
    main_dir.mkdir(parents=True)
    (main_dir / "test.txt").write_text("".join(f"{i}\n" for i in OBJECTS))
    for image_id, objs in OBJECTS.items():
        xml = ["<annotation><size><width>60</width><height>60</height></size>"]
        for name, (x1, y1, x2, y2), diff in objs:
            xml.append(f"<object><name>{name}</name><difficult>{int(diff)}</difficult><bndbox>"
                       f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
                       "</bndbox></object>")
        xml.append("</annotation>")
        (voc07 / "Annotations" / f"{image_id}.xml").write_text("".join(xml))
    for name in VOC_CLASSES:
        lines = []
        for image_id, objs in OBJECTS.items():
            flags = [d for n, _, d in objs if n == name]
            label = -1 if not flags else (1 if not all(flags) else 0)
            lines.append(f"{image_id} {label:2d}\n")
        (main_dir / f"{name}_test.txt").write_text("".join(lines))
    voc12 = root / "VOCdevkit" / "VOC2012"
    (voc12 / "SegmentationClass").mkdir(parents=True)
    (voc12 / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc12 / "ImageSets" / "Segmentation" / "val.txt").write_text("2012_a\n2012_b\n")
    for image_id, mask in SEG_MASKS.items():
        Image.fromarray(mask).save(voc12 / "SegmentationClass" / f"{image_id}.png")
    return root / "VOCdevkit"


@pytest.fixture
def devkit(tmp_path):
    return _write_devkit(tmp_path / "data")


def _cls_scores():
    # aeroplane: 000001 (+) 0.2, 000002 (difficult) 0.9, 000003 (-) 0.5
    rng = np.random.default_rng(0)
    scores = rng.random((3, 20))
    scores[:, VOC_CLASSES.index("aeroplane")] = [0.2, 0.9, 0.5]
    return scores


def _write_cls(results, scores=None, skip=()):
    scores = _cls_scores() if scores is None else scores
    p = Predictions("cls", VOC_CLASSES, list(OBJECTS), scores=scores)
    export_predictions(p, results, "test")
    for name in skip:
        (results / f"comp1_cls_test_{name}.txt").unlink()
    return p


def run(*args):
    return CliRunner().invoke(main, ["evaluate", *map(str, args)])


def run_json(*args):
    out = run(*args, "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


# ------------------------------------------------------------------------------ cls


def test_cls_by_hand(devkit, tmp_path):
    results = tmp_path / "res"
    p = _write_cls(results)
    common = ("cls", "--devkit", devkit, "--year", "2007", "--split", "test", "--results", results)
    got = run_json(*common)
    assert got["metric"] == "voc07-11pt"
    # aeroplane: the difficult image is dropped; ranking 000003 (-), 000001 (+) -> AP 1/2
    # (it would be 1/3 were the difficult image a negative)
    assert got["per_class"]["aeroplane"] == pytest.approx(0.5)
    assert got["per_class"]["bicycle"] is None  # no positives: NaN -> null, out of the mean
    scored = [v for v in got["per_class"].values() if v is not None]
    assert len(scored) == 3  # aeroplane, dog, person
    assert got["mean"] == pytest.approx(np.mean(scored))
    assert set(got) == {"metric", "mean", "per_class"}
    for metric in ("sklearn-ap", "voc10-area"):
        other = run_json(*common, "--metric", metric)
        assert other["metric"] == metric
        assert other["per_class"]["aeroplane"] == pytest.approx(0.5)
    # the same number as the evaluator on the in-memory predictions
    gt = cls_ground_truth(VOCDevkit(devkit), "2007", "test")
    direct = get_registry().get("evaluators", "sklearn-ap").evaluate(p, gt)
    assert run_json(*common, "--metric", "sklearn-ap")["mean"] == pytest.approx(direct.mean, abs=1e-12)

    table = run(*common)
    assert table.exit_code == 0, table.output
    assert "voc07-11pt (%)" in table.output and "| mean" in table.output
    assert "| aeroplane" in table.output and "50.00" in table.output


def test_cls_classes_option_and_missing_file(devkit, tmp_path):
    results = tmp_path / "res"
    _write_cls(results, skip=[c for c in VOC_CLASSES if c not in ("aeroplane", "dog")])
    common = ("cls", "--devkit", devkit.parent, "--year", "2007", "--split", "test", "--results", results)
    out = run(*common)
    assert out.exit_code == 2
    assert "error:" in out.output and "comp1_cls_test_bicycle.txt: results file is missing" in out.output
    got = run_json(*common, "--classes", "aeroplane,dog")
    assert list(got["per_class"]) == ["aeroplane", "dog"]
    assert got["mean"] == pytest.approx((0.5 + got["per_class"]["dog"]) / 2)
    bad = run(*common, "--classes", "aeroplane,unicorn")
    assert bad.exit_code == 2 and "unknown class 'unicorn'" in bad.output


def test_cls_image_missing_from_results_ranks_last(devkit, tmp_path):
    results = tmp_path / "res"
    _write_cls(results)
    # drop the positive 000001 from aeroplane: it gets -inf, ranked after the negative -> 1/2
    path = results / "comp1_cls_test_aeroplane.txt"
    path.write_text("".join(ln + "\n" for ln in path.read_text().splitlines() if not ln.startswith("000001")))
    got = run_json("cls", "--devkit", devkit, "--year", "2007", "--split", "test",
                   "--results", results, "--classes", "aeroplane")
    assert got["per_class"]["aeroplane"] == pytest.approx(0.5)


@pytest.mark.parametrize("content, message", [
    ("000001 0.5\n000002 abc\n", "line 2: score 'abc' is not a number"),
    ("000001 0.5\n\n000002 0.1 7\n", "line 3: expected '<image_id> <score>'"),
    ("999999 0.5\n", "line 1: unknown image id '999999'"),
    ("000001 0.5\n000001 0.4\n", "line 2: image id '000001' is listed twice (first on line 1)"),
    ("000001 nan\n", "line 1: score is NaN"),
])
def test_cls_bad_lines_name_file_and_line(devkit, tmp_path, content, message):
    results = tmp_path / "res"
    _write_cls(results)
    (results / "comp1_cls_test_dog.txt").write_text(content)
    out = run("cls", "--devkit", devkit, "--year", "2007", "--split", "test", "--results", results)
    assert out.exit_code == 2
    assert f"comp1_cls_test_dog.txt: {message}" in out.output
    assert "Traceback" not in out.output


# ------------------------------------------------------------------------------ det


def _write_det(results, aeroplane_lines):
    results.mkdir(parents=True, exist_ok=True)
    (results / "comp3_det_test_aeroplane.txt").write_text("".join(f"{ln}\n" for ln in aeroplane_lines))


def test_det_difficult_and_iou_half_by_hand(devkit, tmp_path):
    results = tmp_path / "res"
    # first: a detection on the difficult aeroplane of 000002 (ignored)
    # then:  IoU with the aeroplane of 000001 exactly 100 / 200 = 0.5
    _write_det(results, ["000002 0.9 1 1 10 10", "000001 0.8 1 1 10 20"])
    common = ("det", "--devkit", devkit, "--year", "2007", "--split", "test", "--results", results,
              "--classes", "aeroplane")
    got = run_json(*common)
    assert got == {"metric": "voc07-11pt", "mean": 1.0, "per_class": {"aeroplane": 1.0}}
    strict = run_json(*common, "--iou-strict")
    assert strict["per_class"]["aeroplane"] == 0.0 and strict["iou_strict"] is True
    table = run(*common, "--iou-strict")
    assert "IoU > 0.5" in table.output
    for metric, value in (("voc10-area", 1.0), ("coco-ap50", 1.0)):
        assert run_json(*common, "--metric", metric)["mean"] == pytest.approx(value)


@pytest.mark.parametrize("line, message", [
    ("000001 0.8 1 1 10", "line 1: expected '<image_id> <score> <xmin> <ymin> <xmax> <ymax>'"),
    ("000001 0.8 1 1 10 x", "line 1: ymax 'x' is not a number"),
    ("000009 0.8 1 1 10 10", "line 1: unknown image id '000009'"),
])
def test_det_bad_lines_name_file_and_line(devkit, tmp_path, line, message):
    results = tmp_path / "res"
    _write_det(results, [line])
    out = run("det", "--devkit", devkit, "--year", "2007", "--split", "test", "--results", results,
              "--classes", "aeroplane")
    assert out.exit_code == 2
    assert f"comp3_det_test_aeroplane.txt: {message}" in out.output


def test_metric_must_fit_the_task(devkit, tmp_path):
    results = tmp_path / "res"
    _write_det(results, [])
    common = ("det", "--devkit", devkit, "--year", "2007", "--split", "test", "--results", results,
              "--classes", "aeroplane")
    out = run(*common, "--metric", "sklearn-ap")
    assert out.exit_code == 2 and "scores cls predictions, not det" in out.output
    assert "coco-ap50" in out.output  # lists what fits
    out = run(*common, "--metric", "nope")
    assert out.exit_code == 2 and "unknown evaluator 'nope'" in out.output
    out = run(*common[:-2], "--results", tmp_path / "nowhere")
    assert out.exit_code == 2 and "nowhere" in out.output


# ------------------------------------------------------------------------------ seg


def _seg_predictions():
    pred = {"2012_a": np.array([[0, 1, 1, 1], [0, 2, 1, 0]], dtype=np.uint8),
            "2012_b": np.array([[15, 0], [0, 0]], dtype=np.uint8)}
    return Predictions("seg", SEG_CLASSES, list(pred), masks=pred)


def test_seg_by_hand(devkit, tmp_path):
    results = tmp_path / "res"
    export_predictions(_seg_predictions(), results, "val")
    common = ("seg", "--devkit", devkit, "--year", "2012", "--split", "val", "--results", results)
    got = run_json(*common)
    # the matrix of tests/test_miou.py with class 2 renamed 15 (person):
    # IoU background 4/7, aeroplane 3/5, person 1/2; all other classes absent -> skipped
    assert got["metric"] == "miou"
    assert got["per_class"]["background"] == pytest.approx(4 / 7)
    assert got["per_class"]["aeroplane"] == pytest.approx(3 / 5)
    assert got["per_class"]["person"] == pytest.approx(1 / 2)
    assert got["per_class"]["dog"] is None
    assert got["mean"] == pytest.approx((4 / 7 + 3 / 5 + 1 / 2) / 3)
    assert got["pixel_acc"] == pytest.approx(8 / 11)
    assert got["mean_acc"] == pytest.approx((4 / 5 + 3 / 4 + 1 / 2) / 3)
    assert got["fw_iou"] == pytest.approx(5 / 11 * 4 / 7 + 4 / 11 * 3 / 5 + 2 / 11 * 1 / 2)
    sub = run_json(*common, "--classes", "aeroplane,person")
    assert sub["per_class"] == {"aeroplane": pytest.approx(0.6), "person": pytest.approx(0.5)}
    assert sub["mean"] == pytest.approx(0.55) and sub["pixel_acc"] == pytest.approx(8 / 11)
    table = run(*common)
    assert "miou (%)" in table.output and "pixel_acc" in table.output and "fw_iou" in table.output


def test_seg_errors_name_the_file(devkit, tmp_path):
    results = tmp_path / "res"
    export_predictions(_seg_predictions(), results, "val")
    common = ("seg", "--devkit", devkit, "--year", "2012", "--split", "val", "--results", results)
    Image.fromarray(np.zeros((3, 2), dtype=np.uint8)).save(results / "2012_b.png")
    out = run(*common)
    assert out.exit_code == 2
    assert "2012_b.png: mask is 2x3 pixels (width x height), the ground truth is 2x2" in out.output
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(results / "2012_b.png")
    out = run(*common)
    assert out.exit_code == 2 and "2012_b.png: mask is a RGB image" in out.output
    Image.fromarray(np.full((2, 2), 42, dtype=np.uint8)).save(results / "2012_b.png")
    out = run(*common)
    assert out.exit_code == 2 and "2012_b.png: pixel (x=0, y=0) has value 42" in out.output
    (results / "2012_b.png").write_bytes(b"not a png")
    out = run(*common)
    assert out.exit_code == 2 and "2012_b.png: cannot read mask" in out.output
    (results / "2012_b.png").unlink()
    out = run(*common)
    assert out.exit_code == 2 and "2012_b.png: results mask is missing" in out.output


def test_help_explains_formats_and_metrics():
    out = CliRunner().invoke(main, ["evaluate", "--help"])
    assert out.exit_code == 0
    for text in ("comp1_cls_<split>_<class>.txt", "comp3_det_<split>_<class>.txt", "<image_id>.png",
                 "voc07-11pt", "voc10-area", "sklearn-ap", "coco-ap50", "coco-ap", "miou",
                 "--iou-strict", "--classes", "--json"):
        assert text in out.output


# ------------------------------------------------------------------------------ round trip


def test_round_trip_on_the_tiny_world(tiny_world, tmp_path):
    """Predictions scored in memory (as a run does), exported, and scored again by the CLI."""
    registry = get_registry()
    devkit = VOCDevkit(locate_devkit(tiny_world))
    rng = np.random.default_rng(5)

    # classification
    gt = cls_ground_truth(devkit, "2007", "test")
    scores = (gt.labels > 0) * rng.uniform(0, 1, gt.labels.shape) + rng.normal(size=gt.labels.shape)
    p = Predictions("cls", VOC_CLASSES, gt.image_ids, scores=scores.astype(np.float32))
    export_predictions(p, tmp_path / "cls", "test")
    for metric in ("voc07-11pt", "sklearn-ap", "voc10-area"):
        stored = registry.get("evaluators", metric).evaluate(p, gt)
        got = run_json("cls", "--devkit", tiny_world, "--year", "2007", "--split", "test",
                       "--results", tmp_path / "cls", "--metric", metric)
        assert got["mean"] == pytest.approx(stored.mean, abs=1e-12)

    # detection: jittered true boxes plus random false positives, rounded scores (ties)
    dgt = det_ground_truth(devkit, "2007", "test")
    dets = {c: [] for c in VOC_CLASSES}
    for image_id in dgt.image_ids:
        for o in dgt.objects[image_id]:
            box = np.array(o.box) + rng.integers(-4, 5, size=4)
            dets[o.class_name].append((image_id, float(np.round(rng.random(), 2)), *box.tolist()))
        for _ in range(2):
            x, y = rng.integers(1, 100, size=2).tolist()
            dets[VOC_CLASSES[rng.integers(20)]].append((image_id, float(np.round(rng.random(), 2)),
                                                        x, y, x + 20.5, y + 30))
    dp = Predictions("det", VOC_CLASSES, dgt.image_ids, detections=dets)
    export_predictions(dp, tmp_path / "det", "test")
    for metric in ("voc07-11pt", "voc10-area", "coco-ap"):
        stored = registry.get("evaluators", metric).evaluate(dp, dgt)
        got = run_json("det", "--devkit", tiny_world, "--year", "2007", "--split", "test",
                       "--results", tmp_path / "det", "--metric", metric)
        assert got["mean"] == pytest.approx(stored.mean, abs=1e-12)
        assert not math.isnan(stored.mean) and 0 < stored.mean < 1

    # segmentation: ground truth with a fifth of the pixels replaced
    sgt = seg_ground_truth(devkit, "2012", "val")
    masks = {}
    for image_id in sgt.image_ids:
        m = sgt.mask(image_id).copy()
        noise = rng.random(m.shape) < 0.2
        m[noise] = rng.integers(0, 21, size=int(noise.sum()))
        m[m == 255] = 0
        masks[image_id] = m
    sp = Predictions("seg", SEG_CLASSES, sgt.image_ids, masks=masks)
    stored = registry.get("evaluators", "miou").evaluate(sp, sgt)
    export_predictions(sp, tmp_path / "seg", "val")
    got = run_json("seg", "--devkit", tiny_world, "--year", "2012", "--split", "val",
                   "--results", tmp_path / "seg")
    assert got["mean"] == pytest.approx(stored.mean, abs=1e-12)
    for key in ("pixel_acc", "mean_acc", "fw_iou"):
        assert got[key] == pytest.approx(stored.extra[key], abs=1e-12)
