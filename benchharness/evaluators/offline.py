"""Score VOC results files against a VOCdevkit: what ``benchharness evaluate`` does.

:func:`evaluate_results_dir` builds the ground truth with :mod:`.ground_truth`, reads the
results with :mod:`.results_files` and scores them with a registered evaluator, so that the
numbers are those a run computes from the same predictions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.voc.classes import VOC_CLASSES
from ..data.voc.devkit import VOCDevkit, locate_devkit
from ..interfaces import BenchharnessError, Metrics
from .ground_truth import SEG_CLASSES, cls_ground_truth, det_ground_truth, seg_ground_truth
from .results_files import read_cls_results, read_det_results, read_seg_results

DEFAULT_METRIC = {"cls": "voc07-11pt", "det": "voc07-11pt", "seg": "miou"}
"""The metric ``benchharness evaluate`` uses when ``--metric`` is not given."""


@dataclass
class OfflineResult:
    """What :func:`evaluate_results_dir` found: the metrics and how many images were scored."""

    metrics: Metrics
    n_images: int
    classes: tuple[str, ...]


def parse_classes(task: str, text: str | None) -> tuple[str, ...] | None:
    """``a,b,c`` -> ``("a", "b", "c")``, checked against the VOC class list of ``task``."""
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    known = SEG_CLASSES if task == "seg" else VOC_CLASSES
    if not names:
        raise BenchharnessError("--classes is empty")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BenchharnessError(f"unknown class {unknown[0]!r} in --classes; "
                                f"known: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise BenchharnessError("--classes lists a class twice")
    return names


class _LastMask:
    """Reads ground-truth masks, remembering the last one (its shape is checked against the
    prediction right after the evaluator has read it)."""

    def __init__(self, read):
        self.read = read
        self.key: str | None = None
        self.value: np.ndarray | None = None

    def __call__(self, image_id: str) -> np.ndarray:
        if image_id != self.key:
            self.value, self.key = self.read(image_id), image_id
        return self.value

    def shape(self, image_id: str) -> tuple[int, int]:
        return tuple(self(image_id).shape)


def evaluate_results_dir(task: str, devkit_dir: Path | str, year: str, split: str,
                         results_dir: Path | str, metric: str | None = None,
                         classes: Sequence[str] | None = None, iou_strict: bool = False,
                         registry=None) -> OfflineResult:
    """Score the results files of ``task`` (``cls``, ``det`` or ``seg``) in ``results_dir``.

    ``classes`` restricts the evaluation to those classes (for ``seg``: the per-class values
    and the mean; the pixel accuracies always cover every class). Errors the user can fix raise
    :class:`BenchharnessError` / :class:`DataError`.
    """
    if task not in DEFAULT_METRIC:
        raise BenchharnessError(f"unknown task {task!r}; expected cls, det or seg")
    if registry is None:
        from ..plugins import get_registry
        registry = get_registry()
    metric = metric or DEFAULT_METRIC[task]
    evaluator = registry.get("evaluators", metric)
    if task not in evaluator.kinds:
        fitting = sorted(i for i, e in registry.evaluators().items() if task in e.kinds)
        raise BenchharnessError(f"metric {metric!r} scores {', '.join(evaluator.kinds)} predictions, "
                                f"not {task}; for {task} use one of: {', '.join(fitting)}")
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise BenchharnessError(f"{results_dir}: results directory not found")
    devkit = VOCDevkit(locate_devkit(devkit_dir))

    if task == "cls":
        chosen = tuple(classes or VOC_CLASSES)
        gt = cls_ground_truth(devkit, year, split, chosen)
        predictions = read_cls_results(results_dir, split, chosen, gt.image_ids)
    elif task == "det":
        chosen = tuple(classes or VOC_CLASSES)
        gt = det_ground_truth(devkit, year, split, chosen, iou_strict=iou_strict)
        predictions = read_det_results(results_dir, split, chosen, gt.image_ids)
    else:
        chosen = tuple(classes or SEG_CLASSES)
        gt = seg_ground_truth(devkit, year, split)
        cached = _LastMask(gt.masks)
        gt.masks = cached
        predictions = read_seg_results(results_dir, gt.image_ids, gt.class_names,
                                       shape_of=cached.shape, ignore_label=gt.ignore_label)
    try:
        metrics = evaluator.evaluate(predictions, gt)
    except ValueError as exc:
        raise BenchharnessError(f"{metric} on {results_dir}: {exc}") from None
    if task == "seg" and classes:
        metrics = Metrics(metric=metrics.metric, mean=_nanmean(metrics.per_class[c] for c in chosen),
                          per_class={c: metrics.per_class[c] for c in chosen},
                          extra=dict(metrics.extra))
    return OfflineResult(metrics, len(gt.image_ids), chosen)


def _nanmean(values) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def metrics_json(metrics: Metrics, task: str, iou_strict: bool = False) -> dict:
    """The ``--json`` object: metric, mean, per_class (fractions; NaN -> null), seg extras."""
    def clean(v):
        return None if v is None or math.isnan(v) else float(v)

    out = {"metric": metrics.metric, "mean": clean(metrics.mean),
           "per_class": {k: clean(v) for k, v in metrics.per_class.items()}}
    if task == "seg":
        for key in ("pixel_acc", "mean_acc", "fw_iou"):
            out[key] = clean(metrics.extra.get(key, float("nan")))
    if task == "det" and iou_strict:
        out["iou_strict"] = True
    return out


def metrics_table(metrics: Metrics, task: str) -> str:
    """A per-class table (percent) with the mean, labelled with the metric id."""
    from tabulate import tabulate

    def pct(v):
        return "-" if v is None or math.isnan(v) else f"{100 * v:.2f}"

    rows = [[name, pct(v)] for name, v in metrics.per_class.items()]
    rows.append(["mean", pct(metrics.mean)])
    if task == "seg":
        for key in ("pixel_acc", "mean_acc", "fw_iou"):
            rows.append([key, pct(metrics.extra.get(key, float("nan")))])
    table = tabulate(rows, headers=["class", f"{metrics.metric} (%)"], tablefmt="github",
                     disable_numparse=True, colalign=("left", "right"))
    if any(math.isnan(v) for v in metrics.per_class.values()):
        why = ("absent from ground truth and prediction" if task == "seg"
               else "no positives in this split")
        table += f"\n- : {why}; left out of the mean"
    return table
