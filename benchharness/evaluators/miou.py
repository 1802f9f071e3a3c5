"""Segmentation metrics as the FCN reference code computes them (``score.py`` of FCN).

One confusion matrix ``hist[gt, pred]`` (``C x C``, ``C`` classes background included) is
accumulated with ``np.bincount`` over every pixel of the whole split whose ground truth is not
the ignore label (255); then

* pixel accuracy ``= trace(hist) / hist.sum()``;
* class accuracy ``= diag / hist.sum(1)``; ``mean_acc`` is its mean over the classes present in
  the ground truth;
* ``IoU = diag / (hist.sum(1) + hist.sum(0) - diag)``; a class absent from both ground truth
  and prediction has ``0/0`` and is skipped (NaN in ``per_class``, out of the mean); a class
  predicted but absent from the ground truth has IoU 0 and counts;
* frequency-weighted IoU ``= sum(freq * IoU)`` over classes with ``freq = hist.sum(1) /
  hist.sum() > 0``.

``miou`` reports ``mean`` = mean IoU, ``per_class`` = IoU per class, and ``extra`` with
``pixel_acc``, ``mean_acc``, ``fw_iou`` (all fractions).
"""

from __future__ import annotations

import numpy as np

from ..hookspecs import hookimpl
from ..interfaces import Evaluator, Metrics, Predictions, SegGroundTruth


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, n_classes: int,
                     ignore_label: int = 255) -> np.ndarray:
    """``hist[i, j]`` = number of pixels of ground truth ``i`` predicted as ``j`` (int64).

    Pixels whose ground truth is ``ignore_label`` are skipped. Any other ground-truth value
    outside ``0..n_classes-1``, or a predicted value outside it on a scored pixel, raises
    :class:`ValueError`.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"prediction has shape {pred.shape}, ground truth {gt.shape}")
    keep = gt != ignore_label
    g = gt[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    if g.size and (g.min() < 0 or g.max() >= n_classes):
        raise ValueError(f"ground truth holds label {int(g.max() if g.max() >= n_classes else g.min())}, "
                         f"not a class index 0..{n_classes - 1} or {ignore_label}")
    if p.size and (p.min() < 0 or p.max() >= n_classes):
        bad = int(p.max() if p.max() >= n_classes else p.min())
        raise ValueError(f"prediction holds label {bad} on a scored pixel, "
                         f"not a class index 0..{n_classes - 1}")
    return np.bincount(n_classes * g + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)


def scores_from_confusion(hist: np.ndarray) -> dict[str, np.ndarray | float]:
    """FCN's four numbers from a confusion matrix; ``iou`` and ``acc`` per class (NaN = skipped)."""
    hist = np.asarray(hist, dtype=np.float64)
    diag = np.diag(hist)
    gt_count = hist.sum(1)
    pred_count = hist.sum(0)
    total = hist.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        pixel_acc = diag.sum() / total if total else float("nan")
        acc = diag / gt_count
        iou = diag / (gt_count + pred_count - diag)
        freq = gt_count / total if total else np.zeros_like(gt_count)
    scored = freq > 0
    mean_acc = float(np.nanmean(acc)) if np.any(~np.isnan(acc)) else float("nan")
    mean_iou = float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")
    fw_iou = float((freq[scored] * iou[scored]).sum()) if total else float("nan")
    return {"pixel_acc": float(pixel_acc), "mean_acc": mean_acc, "mean_iou": mean_iou,
            "fw_iou": fw_iou, "iou": iou, "acc": acc}


def evaluate_miou(predictions: Predictions, ground_truth: SegGroundTruth) -> Metrics:
    """Mean IoU (and pixel / mean class accuracy, frequency-weighted IoU) over the split.

    Every image of the ground truth needs a predicted mask of the same shape; a predicted image
    the ground truth does not know raises :class:`ValueError`, as does a shape mismatch (both
    name the image). Masks are read one at a time, so ``ground_truth.masks`` and
    ``predictions.masks`` may be lazy mappings.
    """
    if predictions.kind != "seg" or predictions.masks is None:
        raise ValueError("miou needs predictions of kind 'seg' with masks")
    if not isinstance(ground_truth, SegGroundTruth):
        raise ValueError(f"miou needs a SegGroundTruth, got {type(ground_truth).__name__}")
    names = list(ground_truth.class_names)
    if list(predictions.class_names) != names:
        raise ValueError(f"predicted classes {list(predictions.class_names)} differ from the "
                         f"ground truth's {names}: mask values would mean different classes")
    gt_ids = set(ground_truth.image_ids)
    unknown = [i for i in predictions.masks.keys() if i not in gt_ids]
    if unknown:
        raise ValueError(f"unrecognized image {unknown[0]!r}: not in the ground truth")
    n = len(names)
    hist = np.zeros((n, n), dtype=np.int64)
    for image_id in ground_truth.image_ids:
        if image_id not in predictions.masks:
            raise ValueError(f"no predicted mask for image {image_id!r}")
        gt = ground_truth.mask(image_id)
        pred = predictions.masks[image_id]
        try:
            hist += confusion_matrix(gt, pred, n, ground_truth.ignore_label)
        except ValueError as exc:
            raise ValueError(f"image {image_id!r}: {exc}") from None
    s = scores_from_confusion(hist)
    return Metrics(
        metric="miou",
        mean=s["mean_iou"],
        per_class={name: float(v) for name, v in zip(names, s["iou"])},
        extra={"pixel_acc": s["pixel_acc"], "mean_acc": s["mean_acc"], "fw_iou": s["fw_iou"],
               "n_classes_scored": float(np.sum(~np.isnan(s["iou"])))},
    )


@hookimpl
def benchharness_evaluators():
    """The segmentation evaluator ``miou``."""
    return [Evaluator(id="miou", kinds=("seg",), evaluate=evaluate_miou,
                      description="FCN mean IoU over one split-wide confusion matrix (255 ignored; "
                                  "also pixel_acc, mean_acc, fw_iou)")]
