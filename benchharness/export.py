"""Write predictions in the official VOC results formats, for ``benchharness evaluate``.

``export_predictions(predictions, out_dir, split)`` writes

* ``cls``: ``comp1_cls_<split>_<class>.txt`` per class, lines ``<image_id> <score>``;
* ``det``: ``comp3_det_<split>_<class>.txt`` per class, lines
  ``<image_id> <score> <xmin> <ymin> <xmax> <ymax>`` in the order of the detections list (the
  order ties are ranked in);
* ``seg``: ``<image_id>.png`` per image, a palette PNG (the VOC colour map) whose pixel values
  are the class indices;
* ``label`` (single-label, not a VOC format): ``top5_<split>.txt``, lines
  ``<image_id> <class> <class> <class> <class> <class>``, the five best classes by score (ties to
  the lower class index, as the ``top1``/``top5`` evaluators rank), as ILSVRC's submissions list
  them.

Numbers are written with Python's shortest round-trip ``repr``, so reading the files back gives
the very same doubles and ``benchharness evaluate`` reproduces the number a run stored. Every
file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import write_bytes
from .data.voc.classes import VOC_PALETTE
from .evaluators.results_files import cls_results_path, det_results_path, seg_results_path
from .interfaces import Predictions


TOP_LABELS = 5
"""How many classes per image a ``label`` export lists."""


def label_results_path(results_dir: Path | str, split: str) -> Path:
    """``<results_dir>/top5_<split>.txt``: the export of ``label`` predictions."""
    return Path(results_dir) / f"top{TOP_LABELS}_{split}.txt"


def _num(value) -> str:
    value = float(value)
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _check_name(what: str, name: str) -> None:
    if not name or any(c.isspace() for c in name) or "/" in name or "\\" in name:
        raise ValueError(f"{what} {name!r} cannot be written to a VOC results file")


def export_predictions(predictions: Predictions, out_dir: Path | str, split: str) -> list[Path]:
    """Write ``predictions`` under ``out_dir`` (created if needed); return the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_name("split", split)
    for image_id in predictions.image_ids:
        _check_name("image id", str(image_id))
    written: list[Path] = []
    if predictions.kind == "cls":
        if predictions.scores is None:
            raise ValueError("cls predictions without scores")
        scores = np.asarray(predictions.scores, dtype=np.float64)
        expected = (len(predictions.image_ids), len(predictions.class_names))
        if scores.shape != expected:
            raise ValueError(f"scores have shape {scores.shape}, expected {expected}")
        for column, name in enumerate(predictions.class_names):
            _check_name("class", name)
            lines = [f"{image_id} {_num(s)}\n"
                     for image_id, s in zip(predictions.image_ids, scores[:, column])]
            path = cls_results_path(out, split, name)
            write_bytes(path, "".join(lines).encode("utf-8"))
            written.append(path)
    elif predictions.kind == "det":
        if predictions.detections is None:
            raise ValueError("det predictions without detections")
        for name in predictions.class_names:
            _check_name("class", name)
            lines = []
            for det in predictions.detection_tuples(name):
                image_id, score, *box = det
                _check_name("image id", str(image_id))
                if len(box) != 4:
                    raise ValueError(f"class {name!r}: a detection must be "
                                     f"(image_id, score, x1, y1, x2, y2), got {det!r}")
                lines.append(" ".join([str(image_id), _num(score), *(_num(v) for v in box)]) + "\n")
            path = det_results_path(out, split, name)
            write_bytes(path, "".join(lines).encode("utf-8"))
            written.append(path)
    elif predictions.kind == "label":
        if predictions.scores is None:
            raise ValueError("label predictions without scores")
        for name in predictions.class_names:
            _check_name("class", name)
        scores = np.asarray(predictions.scores, dtype=np.float64)
        expected = (len(predictions.image_ids), len(predictions.class_names))
        if scores.shape != expected:
            raise ValueError(f"scores have shape {scores.shape}, expected {expected}")
        best = np.argsort(-scores, axis=1, kind="stable")[:, :TOP_LABELS]
        names = list(predictions.class_names)
        lines = [" ".join([str(image_id), *(names[c] for c in row)]) + "\n"
                 for image_id, row in zip(predictions.image_ids, best.tolist())]
        path = label_results_path(out, split)
        write_bytes(path, "".join(lines).encode("utf-8"))
        written.append(path)
    elif predictions.kind == "seg":
        if predictions.masks is None:
            raise ValueError("seg predictions without masks")
        for image_id in predictions.image_ids:
            mask = np.asarray(predictions.masks[image_id])
            if mask.ndim != 2:
                raise ValueError(f"mask of {image_id!r} has shape {mask.shape}, expected [H, W]")
            if mask.dtype != np.uint8:
                if mask.size and (mask.min() < 0 or mask.max() > 255):
                    raise ValueError(f"mask of {image_id!r} holds values outside 0..255")
                mask = mask.astype(np.uint8)
            height, width = mask.shape
            image = Image.frombytes("P", (width, height), np.ascontiguousarray(mask).tobytes())
            image.putpalette(VOC_PALETTE)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            path = seg_results_path(out, str(image_id))
            write_bytes(path, buffer.getvalue())
            written.append(path)
    else:
        raise ValueError(f"unknown predictions kind {predictions.kind!r}; expected cls, label, det or seg")
    return written
