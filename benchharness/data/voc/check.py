"""``benchharness data check``: validate a VOCdevkit tree and report every problem at once.

:func:`check_devkit` walks one or both years of a VOCdevkit (real PASCAL VOC or the synthetic
world) and returns a list of :class:`Problem` objects, each naming the file (and the line, for
text files and for the ``<object>`` of an annotation) instead of stopping at the first one:

- structure: missing year, ``ImageSets`` or per-image folders;
- split files (``ImageSets/Main|Segmentation/<split>.txt``): malformed lines, duplicate ids,
  ids whose image, annotation or mask is missing;
- per-class files (``ImageSets/Main/<class>_<split>.txt``): missing files, malformed lines,
  ids not in the split or missing from it, unknown class names in file names and (full mode)
  labels that disagree with the annotations;
- annotations: malformed XML, unknown class names, boxes inverted or outside the image
  (VOC boxes are 1-based and inclusive: valid coordinates are ``1..width``, ``1..height``);
- images (full mode): every image listed in any split is decoded with the same decoder the
  runs use, and a JPEG must end with its EOI marker, so truncated files are caught;
- masks (full mode): labels other than 0-20 and 255, a size different from the image's.

``quick=True`` skips everything that decodes images or masks (structure, split files,
per-class files and annotation parsing only): cheap enough to run before every run.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ...interfaces import DataError
from .classes import IGNORE_LABEL, VOC_CLASSES
from .devkit import YEARS, Annotation, VOCDevkit, load_image, locate_devkit

_VALID_MASK_LABELS = frozenset(range(len(VOC_CLASSES) + 1)) | {IGNORE_LABEL}
_PARSE_LINE = re.compile(r"line (\d+), column \d+")
_OBJECT_TAG = re.compile(rb"<object[\s>]")


@dataclass(frozen=True)
class Problem:
    """One problem with one file; ``str()`` gives ``path:line: message`` (or ``path: message``)."""

    path: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.message}"


def _problem_from(error: DataError) -> Problem:
    """A reader's DataError as a Problem, keeping the line when the message gives one."""
    found = _PARSE_LINE.search(error.problem)
    return Problem(error.path, int(found.group(1)) if found else None, error.problem)


# -- text files ---------------------------------------------------------------------------


def _read_lines(path: Path, problems: list[Problem]) -> list[str] | None:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        problems.append(Problem(path, None, "file is missing"))
    except UnicodeDecodeError:
        problems.append(Problem(path, None, "file is not UTF-8 text"))
    except OSError as exc:
        problems.append(Problem(path, None, f"cannot read file: {exc.strerror or exc}"))
    return None


def _check_split(path: Path, problems: list[Problem]) -> list[str]:
    """The ids of a split file, reporting malformed lines and duplicates (all of them)."""
    lines = _read_lines(path, problems)
    if lines is None:
        return []
    ids: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1:
            problems.append(Problem(path, number, f"expected one image id, got {line!r}"))
            continue
        image_id = fields[0]
        if image_id in first_line:
            problems.append(Problem(path, number, f"image id {image_id!r} is listed twice "
                                                  f"(first on line {first_line[image_id]})"))
            continue
        first_line[image_id] = number
        ids.append(image_id)
    if not ids and not any(p.path == path for p in problems):
        problems.append(Problem(path, None, "split file is empty"))
    return ids


def _check_class_file(path: Path, split: str, split_ids: list[str],
                      problems: list[Problem]) -> dict[str, tuple[int, int]]:
    """Labels of one per-class file: image id -> (label, line). Reports every bad line."""
    lines = _read_lines(path, problems)
    if lines is None:
        return {}
    members = set(split_ids)
    labels: dict[str, tuple[int, int]] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("1", "-1", "0"):
            problems.append(Problem(path, number, f"expected '<image id> <1|-1|0>', got {line!r}"))
            continue
        image_id = fields[0]
        if image_id not in members:
            problems.append(Problem(path, number, f"image id {image_id!r} is not in {split}.txt"))
        elif image_id in labels:
            problems.append(Problem(path, number, f"image id {image_id!r} is labelled twice "
                                                  f"(first on line {labels[image_id][1]})"))
        else:
            labels[image_id] = (int(fields[1]), number)
    missing = [image_id for image_id in split_ids if image_id not in labels]
    if missing:
        problems.append(Problem(path, None, f"{len(missing)} image ids of {split}.txt have no "
                                            f"label here (e.g. {', '.join(missing[:3])})"))
    return labels


# -- annotations ---------------------------------------------------------------------------


def _object_lines(path: Path) -> list[int]:
    """Line number of each ``<object>`` element of an XML file, in document order."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    return [data.count(b"\n", 0, match.start()) + 1 for match in _OBJECT_TAG.finditer(data)]


def _check_annotation(annotation: Annotation, path: Path) -> list[Problem]:
    """Unknown class names, bad sizes, and boxes inverted or outside the image."""
    problems: list[Problem] = []
    if annotation.width <= 0 or annotation.height <= 0:
        problems.append(Problem(path, None, f"image size {annotation.width}x{annotation.height} "
                                            "is not positive"))
        return problems
    lines: list[int] | None = None
    for index, obj in enumerate(annotation.objects):
        messages = []
        if obj.name not in VOC_CLASSES:
            messages.append(f"unknown class name {obj.name!r}")
        xmin, ymin, xmax, ymax = obj.bbox
        if xmin > xmax or ymin > ymax:
            messages.append(f"box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) is inverted "
                            "(expected xmin <= xmax and ymin <= ymax)")
        if xmin < 1 or ymin < 1 or xmax > annotation.width or ymax > annotation.height:
            messages.append(f"box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) is outside the "
                            f"{annotation.width}x{annotation.height} image (valid: x in "
                            f"1..{annotation.width}, y in 1..{annotation.height})")
        if messages:
            if lines is None:
                lines = _object_lines(path)
            line = lines[index] if index < len(lines) else None
            for message in messages:
                problems.append(Problem(path, line, f"object {index + 1} ({obj.name}): {message}"))
    return problems


def _expected_labels(annotation: Annotation) -> dict[str, int]:
    """The VOC rule: 1 with a non-difficult instance, 0 with only difficult ones, else -1."""
    labels: dict[str, int] = {}
    for obj in annotation.objects:
        if not obj.difficult:
            labels[obj.name] = 1
        else:
            labels.setdefault(obj.name, 0)
    return labels


# -- images and masks -----------------------------------------------------------------------


def _check_image(path: Path) -> tuple[list[Problem], tuple[int, int] | None]:
    """Decode one image as the runs do; returns its problems and its (height, width)."""
    try:
        image = load_image(path)
    except DataError as exc:
        return [_problem_from(exc)], None
    problems = []
    # torchvision already fails on truncation; the EOI check keeps that true whatever the
    # decoder. The EOI must follow the last start-of-scan (an EXIF thumbnail has its own).
    with open(path, "rb") as handle:
        head = handle.read(2)
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - 65536))
        tail = handle.read()
    if head == b"\xff\xd8" and tail.rfind(b"\xff\xd9") <= tail.rfind(b"\xff\xda"):
        problems.append(Problem(path, None, "JPEG is truncated: no end-of-image marker "
                                            "after the image data"))
    return problems, (int(image.shape[1]), int(image.shape[2]))


def _check_mask(devkit: VOCDevkit, year: str, image_id: str,
                image_size: tuple[int, int] | None) -> list[Problem]:
    path = devkit.mask_path(year, image_id)
    try:
        mask = devkit.read_mask(year, image_id)
    except DataError as exc:
        return [_problem_from(exc)]
    problems = []
    bad = sorted(set(np.unique(mask).tolist()) - _VALID_MASK_LABELS)
    if bad:
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
        problems.append(Problem(path, None, f"mask has labels {shown} "
                                            f"(valid: 0-{len(VOC_CLASSES)} and {IGNORE_LABEL})"))
    if image_size is not None and tuple(mask.shape) != image_size:
        problems.append(Problem(path, None, f"mask is {mask.shape[1]}x{mask.shape[0]} but its "
                                            f"image is {image_size[1]}x{image_size[0]}"))
    return problems


# -- one year --------------------------------------------------------------------------------


def _identity(iterable, **_kwargs):
    return iterable


class _YearCheck:
    """All checks of one ``VOC<year>`` folder, accumulating problems."""

    def __init__(self, devkit: VOCDevkit, year: str, quick: bool, progress: Callable,
                 workers: int):
        self.devkit, self.year, self.quick = devkit, year, quick
        self.progress, self.workers = progress, workers
        self.dir = devkit.root / f"VOC{year}"
        self.problems: list[Problem] = []

    def run(self) -> list[Problem]:
        main = self.dir / "ImageSets" / "Main"
        segmentation = self.dir / "ImageSets" / "Segmentation"
        if not main.is_dir() and not segmentation.is_dir():
            self.problems.append(Problem(self.dir / "ImageSets", None, "no ImageSets/Main or "
                                         "ImageSets/Segmentation folder: no split to check"))
            return self.problems
        main_splits = self._splits(main) if main.is_dir() else {}
        seg_splits = self._splits(segmentation) if segmentation.is_dir() else {}
        main_ids = _union(main_splits.values())
        seg_ids = _union(seg_splits.values())
        for folder, needed in (("JPEGImages", main_ids or seg_ids), ("Annotations", main_ids),
                               ("SegmentationClass", seg_ids)):
            if needed and not (self.dir / folder).is_dir():
                self.problems.append(Problem(self.dir / folder, None, "folder is missing"))

        class_labels = self._class_files(main, main_splits) if main_splits else {}
        main_files = [(main / f"{split}.txt", ids) for split, ids in main_splits.items()]
        seg_files = [(segmentation / f"{split}.txt", ids) for split, ids in seg_splits.items()]
        self._missing_files(main_files, "Annotations", self.devkit.annotation_path, "annotation")
        self._missing_files(main_files + seg_files, "JPEGImages", self.devkit.image_path, "image")
        self._missing_files(seg_files, "SegmentationClass", self.devkit.mask_path, "mask")
        annotations = self._annotations(main_ids)
        if not self.quick:
            self._labels_agree(main_splits, class_labels, annotations)
            self._images_and_masks(main_ids | seg_ids, seg_ids, annotations)
        return self.problems

    def _splits(self, folder: Path) -> dict[str, list[str]]:
        """Every ``<split>.txt`` of an ImageSets folder (names without ``_``)."""
        return {path.stem: _check_split(path, self.problems)
                for path in sorted(folder.glob("*.txt")) if "_" not in path.stem}

    def _class_files(self, main: Path, splits: dict[str, list[str]]) -> dict:
        labels: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
        for path in sorted(main.glob("*_*.txt")):
            name, split = path.stem.rsplit("_", 1)
            if split not in splits:
                self.problems.append(Problem(path, None, f"per-class file for split {split!r}, "
                                                         f"but there is no {split}.txt"))
            elif name not in VOC_CLASSES:
                self.problems.append(Problem(path, None, f"unknown class name {name!r} in the "
                                                         "file name"))
        for split, ids in splits.items():
            for name in VOC_CLASSES:
                path = main / f"{name}_{split}.txt"
                labels[name, split] = _check_class_file(path, split, ids, self.problems)
        return labels

    def _missing_files(self, split_files: list[tuple[Path, list[str]]], folder: str,
                       path_of: Callable[[str, str], Path], what: str) -> None:
        """Report, against the split file and line, every id whose file is missing."""
        if not split_files or not (self.dir / folder).is_dir():
            return  # a missing folder is reported once
        present = {entry.name for entry in os.scandir(self.dir / folder)}
        for split_path, ids in split_files:
            lines = None
            for image_id in ids:
                path = path_of(self.year, image_id)
                if path.name not in present:
                    if lines is None:
                        lines = _line_numbers(split_path)
                    self.problems.append(Problem(split_path, lines.get(image_id),
                                                 f"{image_id!r}: {what} {path} is missing"))

    def _annotations(self, ids: set[str]) -> dict[str, Annotation]:
        annotations: dict[str, Annotation] = {}
        for image_id in self.progress(sorted(ids), desc=f"annotations VOC{self.year}",
                                      total=len(ids)):
            path = self.devkit.annotation_path(self.year, image_id)
            if not path.is_file():
                continue  # reported against the split file
            try:
                annotation = self.devkit.read_annotation(self.year, image_id)
            except DataError as exc:
                self.problems.append(_problem_from(exc))
                continue
            self.problems.extend(_check_annotation(annotation, path))
            annotations[image_id] = annotation
        return annotations

    def _labels_agree(self, splits, class_labels, annotations) -> None:
        main = self.dir / "ImageSets" / "Main"
        for split in splits:
            for name in VOC_CLASSES:
                path = main / f"{name}_{split}.txt"
                for image_id, (label, line) in class_labels.get((name, split), {}).items():
                    if image_id not in annotations:
                        continue
                    expected = _expected_labels(annotations[image_id]).get(name, -1)
                    if label != expected:
                        self.problems.append(Problem(
                            path, line, f"{image_id!r} is labelled {label} but its annotation "
                                        f"says {expected} (1: a non-difficult {name}, 0: only "
                                        f"difficult ones, -1: none)"))

    def _images_and_masks(self, ids: set[str], seg_ids: set[str],
                          annotations: dict[str, Annotation]) -> None:
        ordered = [i for i in sorted(ids) if self.devkit.image_path(self.year, i).is_file()]

        def one(image_id: str) -> list[Problem]:
            path = self.devkit.image_path(self.year, image_id)
            problems, size = _check_image(path)
            annotation = annotations.get(image_id)
            if size is not None and annotation is not None and (
                    (annotation.height, annotation.width) != size):
                problems.append(Problem(
                    self.devkit.annotation_path(self.year, image_id), None,
                    f"<size> says {annotation.width}x{annotation.height} but the image is "
                    f"{size[1]}x{size[0]}"))
            if image_id in seg_ids and self.devkit.mask_path(self.year, image_id).is_file():
                problems.extend(_check_mask(self.devkit, self.year, image_id, size))
            return problems

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            results = pool.map(one, ordered)
            for problems in self.progress(results, desc=f"images VOC{self.year}",
                                          total=len(ordered)):
                self.problems.extend(problems)


def _union(groups: Iterable[list[str]]) -> set[str]:
    out: set[str] = set()
    for group in groups:
        out.update(group)
    return out


def _line_numbers(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    numbers: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if fields:
            numbers.setdefault(fields[0], number)
    return numbers


# -- public API ------------------------------------------------------------------------------


def check_devkit(root: Path | str, years: Sequence[str] | None = None, *, quick: bool = False,
                 progress: Callable | None = None, workers: int | None = None) -> list[Problem]:
    """Every problem of the VOCdevkit at ``root`` (the devkit itself or the folder holding it).

    ``years``: the years to check (``"2007"``, ``"2012"``); a requested year that is missing
    is a problem. ``None`` checks the years present. ``quick=True`` skips decoding images and
    masks. ``progress(iterable, desc=..., total=...)`` wraps the long loops in a progress bar;
    ``workers`` threads decode images (default: the CPU count). Raises DataError only when no
    VOCdevkit is found at all; an empty list means the tree is clean.
    """
    devkit = VOCDevkit(locate_devkit(root))
    progress = progress or _identity
    workers = workers or os.cpu_count() or 1
    problems: list[Problem] = []
    wanted = [str(year) for year in years] if years is not None else [
        year for year in YEARS if (devkit.root / f"VOC{year}").is_dir()]
    for year in wanted:
        if not (devkit.root / f"VOC{year}").is_dir():
            problems.append(Problem(devkit.root / f"VOC{year}", None,
                                    f"VOC{year} is missing from this VOCdevkit"))
            continue
        problems.extend(_YearCheck(devkit, year, quick, progress, workers).run())
    return problems


def format_problems(problems: Sequence[Problem], limit: int | None = None) -> str:
    """One problem per line (at most ``limit`` of them, then a count of the rest)."""
    shown = problems if limit is None else problems[:limit]
    lines = [str(problem) for problem in shown]
    if len(problems) > len(shown):
        lines.append(f"... and {len(problems) - len(shown)} more")
    return "\n".join(lines)


def ensure_devkit(root: Path | str, years: Sequence[str] | None = None, *, quick: bool = True,
                  limit: int = 20, progress: Callable | None = None) -> Path:
    """Check the devkit (quick by default) and raise DataError listing the problems, if any.

    Returns the VOCdevkit directory. Meant to run before a run spends any compute.
    """
    problems = check_devkit(root, years, quick=quick, progress=progress)
    devkit = locate_devkit(root)
    if problems:
        raise DataError(devkit, f"{len(problems)} problem(s) found (run `benchharness data "
                                f"check {root}` for the full report):\n"
                                + format_problems(problems, limit))
    return devkit
