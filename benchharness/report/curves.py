"""Precision-recall curves of one result, from the predictions its run exported.

A run writes its predictions beside the result JSON, in ``<result>.predictions/`` (VOC results
formats, see :mod:`benchharness.export`). This module reads them back with
:mod:`benchharness.evaluators.results_files`, builds the ground truth of the split the result
names with :mod:`benchharness.evaluators.ground_truth`, and computes each class's curve with
the evaluators' own code (:func:`~benchharness.evaluators.voc_ap.classification_pr`,
:func:`~benchharness.evaluators.voc_det.detection_pr_curves`), so that the curves are those
the stored AP was computed from. Segmentation has no such curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.voc.devkit import VOCDevkit, locate_devkit
from ..evaluators.ground_truth import cls_ground_truth, det_ground_truth
from ..evaluators.results_files import read_cls_results, read_det_results
from ..evaluators.voc_ap import classification_pr
from ..evaluators.voc_det import detection_pr_curves
from ..interfaces import BenchharnessError


class NoCurveKind(BenchharnessError):
    """The exported predictions are of a kind without precision-recall curves (segmentation,
    single-label top-k)."""


@dataclass
class Curve:
    """One class's precision-recall curve (points in ranking order) and its positives."""

    recall: np.ndarray
    precision: np.ndarray
    n_pos: int


def predictions_dir(result: dict, result_path: Path | str) -> Path | None:
    """The folder of the predictions ``result`` exported, or None when there is none.

    The sibling ``<result>.predictions`` comes first (it moves with a copied results folder);
    the ``export.dir`` the result recorded is the fallback.
    """
    sibling = Path(result_path).with_suffix(".predictions")
    if sibling.is_dir():
        return sibling
    recorded = (result.get("export") or {}).get("dir")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    return None


def prediction_kind(folder: Path) -> str | None:
    """``cls``, ``det``, ``seg`` or ``label`` from the file names in ``folder`` (None when empty)."""
    names = [p.name for p in folder.iterdir()]
    if any(n.startswith("comp1_cls_") for n in names):
        return "cls"
    if any(n.startswith("top5_") for n in names):
        return "label"
    if any(n.startswith("comp3_det_") for n in names):
        return "det"
    if any(n.endswith(".png") for n in names):
        return "seg"
    return None


def _devkit(result: dict, data_root: Path | None) -> VOCDevkit:
    candidates = [data_root] if data_root is not None else []
    recorded = result.get("data") or {}
    candidates += [recorded.get("devkit"), recorded.get("root"), result.get("data_root")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return VOCDevkit(locate_devkit(candidate))
    raise BenchharnessError(f"the data of {result.get('method')} / {result.get('task')} was not found "
                            f"(recorded: {recorded.get('root') or result.get('data_root')}); "
                            "pass --data-root")


def pr_curves(result: dict, result_path: Path | str, data_root: Path | str | None = None,
              ) -> tuple[str, dict[str, Curve]]:
    """``(kind, {class: Curve})`` of the result stored at ``result_path``.

    Classes are those of the result's ``per_class``. Raises :class:`BenchharnessError` with the
    reason when there are no exported predictions, they are segmentation masks, or the data the
    result was scored on cannot be found.
    """
    folder = predictions_dir(result, result_path)
    if folder is None:
        raise BenchharnessError("no exported predictions beside the result")
    kind = prediction_kind(folder)
    if kind is None:
        raise BenchharnessError(f"{folder} holds no prediction files")
    if kind == "seg":
        raise NoCurveKind("segmentation masks: precision-recall curves exist for classification "
                          "and detection only")
    if kind == "label":
        raise NoCurveKind("single-label top-5 lists: precision-recall curves exist for multi-label "
                          "classification and detection only")
    export = result.get("export") or {}
    year, split = str(export.get("year") or "2007"), str(export.get("split") or "test")
    classes = tuple(result.get("per_class") or ())
    if not classes:
        raise BenchharnessError("the result has no per-class values")
    devkit = _devkit(result, Path(data_root) if data_root is not None else None)
    if kind == "cls":
        gt = cls_ground_truth(devkit, year, split, classes)
        # scores come back in the ground truth's image order, so columns align with its labels
        scores = read_cls_results(folder, split, classes, gt.image_ids).scores
        labels = np.asarray(gt.labels)
        curves = {}
        for c, name in enumerate(classes):
            rec, prec = classification_pr(scores[:, c], labels[:, c])
            curves[name] = Curve(rec, prec, int((labels[:, c] > 0).sum()))
        return kind, curves
    gt = det_ground_truth(devkit, year, split, classes)
    predictions = read_det_results(folder, split, classes, gt.image_ids)
    return kind, {name: Curve(rec, prec, n_pos)
                  for name, (rec, prec, n_pos) in detection_pr_curves(predictions, gt).items()}
