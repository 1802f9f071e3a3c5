"""Readers of the official VOC results formats (what the devkit's evaluation code reads).

``cls``  ``comp1_cls_<split>_<class>.txt``, one line per image: ``<image_id> <score>``.
``det``  ``comp3_det_<split>_<class>.txt``, one line per detection:
         ``<image_id> <score> <xmin> <ymin> <xmax> <ymax>`` (1-based inclusive pixel
         coordinates, as in the annotations).
``seg``  ``<image_id>.png`` per image, pixel values are class indices (palette ``P`` or
         greyscale ``L`` PNG; the palette itself is not read).

Blank lines are skipped. A missing file, a malformed line, a non-numeric or NaN value, an image
id not in the split or listed twice (cls), an unreadable mask, a mask of another size than its
ground truth or holding a value that is no class index raise
:class:`~benchharness.interfaces.DataError` naming the file (and the line, for text files).

As in the devkit (``VOCevalcls.m``), an image of the split missing from a ``cls`` file gets the
score ``-inf`` (it is ranked last); the order of the lines of a ``det`` file is kept, so tied
detections are ranked in file order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from ..interfaces import DataError, Predictions


def cls_results_path(results_dir: Path | str, split: str, class_name: str) -> Path:
    """``<results_dir>/comp1_cls_<split>_<class>.txt``."""
    return Path(results_dir) / f"comp1_cls_{split}_{class_name}.txt"


def det_results_path(results_dir: Path | str, split: str, class_name: str) -> Path:
    """``<results_dir>/comp3_det_<split>_<class>.txt``."""
    return Path(results_dir) / f"comp3_det_{split}_{class_name}.txt"


def seg_results_path(results_dir: Path | str, image_id: str) -> Path:
    """``<results_dir>/<image_id>.png``."""
    return Path(results_dir) / f"{image_id}.png"


def _lines(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """``(line number, line, fields)`` of every non-blank line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, "results file is missing") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, expected a results file") from None
    except UnicodeDecodeError:
        raise DataError(path, "results file is not UTF-8 text") from None
    except OSError as exc:
        raise DataError(path, f"cannot read results file: {exc.strerror or exc}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields:
            yield number, line, fields


def _float(path: Path, number: int, raw: str, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise DataError(path, f"line {number}: {what} {raw!r} is not a number") from None
    if math.isnan(value):
        raise DataError(path, f"line {number}: {what} is NaN")
    return value


def read_cls_results(results_dir: Path | str, split: str, class_names: Sequence[str],
                     image_ids: Sequence[str]) -> Predictions:
    """Classification scores of ``image_ids`` from the ``comp1_cls`` files of ``class_names``."""
    row_of = {image_id: row for row, image_id in enumerate(image_ids)}
    scores = np.full((len(image_ids), len(class_names)), -np.inf, dtype=np.float64)
    for column, name in enumerate(class_names):
        path = cls_results_path(results_dir, split, name)
        first_line: dict[int, int] = {}
        for number, line, fields in _lines(path):
            if len(fields) != 2:
                raise DataError(path, f"line {number}: expected '<image_id> <score>', got {line!r}")
            row = row_of.get(fields[0])
            if row is None:
                raise DataError(path, f"line {number}: unknown image id {fields[0]!r} "
                                      f"(not in split {split!r})")
            if row in first_line:
                raise DataError(path, f"line {number}: image id {fields[0]!r} is listed twice "
                                      f"(first on line {first_line[row]})")
            first_line[row] = number
            scores[row, column] = _float(path, number, fields[1], "score")
    return Predictions("cls", tuple(class_names), list(image_ids), scores=scores)


def read_det_results(results_dir: Path | str, split: str, class_names: Sequence[str],
                     image_ids: Sequence[str]) -> Predictions:
    """Detections from the ``comp3_det`` files of ``class_names``, in file order."""
    known = set(image_ids)
    detections: dict[str, list[tuple]] = {}
    for name in class_names:
        path = det_results_path(results_dir, split, name)
        found: list[tuple] = []
        for number, line, fields in _lines(path):
            if len(fields) != 6:
                raise DataError(path, f"line {number}: expected '<image_id> <score> <xmin> <ymin> "
                                      f"<xmax> <ymax>', got {line!r}")
            if fields[0] not in known:
                raise DataError(path, f"line {number}: unknown image id {fields[0]!r} "
                                      f"(not in split {split!r})")
            score = _float(path, number, fields[1], "score")
            box = [_float(path, number, raw, what)
                   for raw, what in zip(fields[2:], ("xmin", "ymin", "xmax", "ymax"))]
            if any(math.isinf(v) for v in box):
                raise DataError(path, f"line {number}: box coordinates must be finite, got {line!r}")
            found.append((fields[0], score, *box))
        detections[name] = found
    return Predictions("det", tuple(class_names), list(image_ids), detections=detections)


def read_result_mask(path: Path, n_classes: int, ignore_label: int = 255,
                     shape: tuple[int, int] | None = None) -> np.ndarray:
    """One predicted mask as ``uint8 [H, W]``; checks mode, size and values (see module doc).

    ``ignore_label`` is accepted as a value (it only matters on pixels the ground truth scores,
    which the evaluator reports).
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise DataError(path, f"mask is a {image.mode} image; expected class indices in a "
                                      "palette (P) or greyscale (L) PNG")
            mask = np.array(image, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(path, "results mask is missing") from None
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(path, f"cannot read mask (corrupt or truncated?): {exc}") from None
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise DataError(path, f"mask is {mask.shape[1]}x{mask.shape[0]} pixels (width x height), "
                              f"the ground truth is {shape[1]}x{shape[0]}")
    bad = (mask >= n_classes) & (mask != ignore_label)
    if bad.any():
        y, x = (int(v[0]) for v in np.nonzero(bad))
        raise DataError(path, f"pixel (x={x}, y={y}) has value {int(mask[y, x])}, not a class "
                              f"index 0..{n_classes - 1} (or {ignore_label})")
    return mask


class MaskFiles(Mapping):
    """A lazy mapping image id -> predicted mask, read (and checked) from PNG files on access.

    ``shape_of(image_id)``, when given, returns the ground truth's ``(H, W)`` for the size check.
    """

    def __init__(self, paths: Mapping[str, Path], n_classes: int, ignore_label: int = 255,
                 shape_of: Callable[[str], tuple[int, int]] | None = None):
        self.paths = dict(paths)
        self.n_classes = n_classes
        self.ignore_label = ignore_label
        self.shape_of = shape_of

    def __getitem__(self, image_id: str) -> np.ndarray:
        path = self.paths[image_id]
        shape = self.shape_of(image_id) if self.shape_of is not None else None
        return read_result_mask(path, self.n_classes, self.ignore_label, shape)

    def __iter__(self):
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def read_seg_results(results_dir: Path | str, image_ids: Sequence[str], class_names: Sequence[str],
                     shape_of: Callable[[str], tuple[int, int]] | None = None,
                     ignore_label: int = 255) -> Predictions:
    """Predicted masks ``<image_id>.png`` of ``image_ids``; every file must exist.

    The masks are read lazily (one at a time during evaluation) through :class:`MaskFiles`.
    """
    paths = {image_id: seg_results_path(results_dir, image_id) for image_id in image_ids}
    missing = [p for p in paths.values() if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(missing[0], f"results mask is missing{more}")
    masks = MaskFiles(paths, len(class_names), ignore_label, shape_of)
    return Predictions("seg", tuple(class_names), list(image_ids), masks=masks)
