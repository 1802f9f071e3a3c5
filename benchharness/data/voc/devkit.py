"""Readers for the PASCAL VOCdevkit layout (real VOC 2007/2012 and the synthetic world).

Layout read here (the data root may hold ``VOCdevkit/``, be it, or hold ``VOC2007/`` directly:
see :data:`LAYOUTS`)::

    VOCdevkit/VOC2007/JPEGImages/<id>.jpg
                     /Annotations/<id>.xml
                     /ImageSets/Main/<split>.txt, <class>_<split>.txt
                     /ImageSets/Segmentation/<split>.txt
                     /SegmentationClass/<id>.png

Every problem with the files raises :class:`~benchharness.interfaces.DataError` naming the
file (and the line, for text files).
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ...interfaces import DataError
from .classes import VOC_CLASSES

YEARS = ("2007", "2012")

_TV_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"

LAYOUTS = {
    "DIR/VOCdevkit/VOCyyyy": "DIR/VOCdevkit/VOC2007 (and VOC2012), as the official archives extract",
    "DIR is VOCdevkit": "DIR is the VOCdevkit folder itself, holding VOC2007/ (and VOC2012/)",
    "DIR/VOCyyyy": "DIR holds VOC2007/ (and VOC2012/) directly",
}
"""The folder layouts a data root may have: a short name -> what it looks like."""

_HOW_TO_GET = (
    "no VOCdevkit found here: expected one of the layouts "
    + "; ".join(f"({i}) {text}" for i, text in enumerate(LAYOUTS.values(), 1))
    + ". Get PASCAL VOC from http://host.robots.ox.ac.uk/pascal/VOC/ or run "
    "`benchharness data fetch voc2007`, or generate the synthetic world with "
    "`benchharness data synth --out DIR`"
)


@dataclass(frozen=True)
class FoundDevkit:
    """Where a data root's PASCAL VOC is: the ``devkit`` folder (the one holding ``VOC<year>``),
    the name of its layout (a key of :data:`LAYOUTS`) and the years present."""

    devkit: Path
    layout: str
    years: tuple[str, ...]

    def describe(self, data_root: Path | str) -> list[str]:
        """One log line per year found, naming the layout."""
        return [f"found VOC{year} at {self.devkit / f'VOC{year}'} (layout: {self.layout}, "
                f"data root {data_root})" for year in self.years]


def _years(path: Path) -> tuple[str, ...]:
    return tuple(year for year in YEARS if (path / f"VOC{year}").is_dir())


def find_devkit(data_root: Path | str) -> FoundDevkit:
    """Which of the :data:`LAYOUTS` ``data_root`` has; raise DataError listing them otherwise.

    Only reads: nothing is created or changed under ``data_root``.
    """
    root = Path(data_root)
    nested = root / "VOCdevkit"
    if nested.is_dir() and _years(nested):
        return FoundDevkit(nested, "DIR/VOCdevkit/VOCyyyy", _years(nested))
    if root.is_dir() and _years(root):
        layout = "DIR is VOCdevkit" if root.resolve().name == "VOCdevkit" else "DIR/VOCyyyy"
        return FoundDevkit(root, layout, _years(root))
    raise DataError(root, _HOW_TO_GET)


def locate_devkit(data_root: Path | str) -> Path:
    """Return the ``VOCdevkit`` directory of ``data_root`` in any of the :data:`LAYOUTS` (see
    :func:`find_devkit`); raise DataError listing them otherwise."""
    return find_devkit(data_root).devkit


@dataclass
class VOCObject:
    """One annotated object. ``bbox`` is ``(xmin, ymin, xmax, ymax)``, 1-based inclusive."""

    name: str
    bbox: tuple[float, float, float, float]
    difficult: bool
    truncated: bool
    pose: str = "Unspecified"


@dataclass
class Annotation:
    """The content of one ``Annotations/<id>.xml`` file."""

    image_id: str
    width: int
    height: int
    objects: list[VOCObject] = field(default_factory=list)
    depth: int = 3
    segmented: bool = False


def load_image(path: Path | str) -> torch.Tensor:
    """Read an image file as a ``uint8`` tensor ``[3, H, W]`` (RGB).

    torchvision decodes it; a format torchvision does not read (BMP, TIFF, PPM, ...) is decoded
    by PIL instead. A missing, unreadable, truncated or undecodable file raises DataError naming it.
    """
    from torchvision.io import ImageReadMode, decode_image

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "image file is missing") from None
    except OSError as exc:
        raise DataError(path, f"cannot read image file: {exc.strerror or exc}") from None
    if not data:
        raise DataError(path, "image file is empty")
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of TorchCodec; not our user's
            # concern, and repeated once per image.
            warnings.filterwarnings("ignore", message=_TV_DEPRECATION, category=DeprecationWarning)
            image = decode_image(
                torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB
            )
    except RuntimeError as exc:
        image = _decode_with_pil(data)
        if image is not None:
            return image
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decode failed"
        # torchvision prefixes the C++ source location; keep only the human part.
        message = message.rsplit(", ", 1)[-1]
        raise DataError(path, f"cannot decode image (corrupt or truncated?): {message}") from None
    return image


_TORCHVISION_FORMATS = {"JPEG", "PNG", "GIF", "WEBP"}


def _decode_with_pil(data: bytes) -> torch.Tensor | None:
    """``data`` decoded by PIL as uint8 [3, H, W] RGB when it is an image in a format torchvision
    does not read; None otherwise (for torchvision's formats its own error stands)."""
    import io

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format in _TORCHVISION_FORMATS:
                return None
            rgb = np.asarray(image.convert("RGB"))
    except Exception:  # whatever PIL fails with, torchvision's error is the one to report
        return None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, "file is missing") from None
    except UnicodeDecodeError:
        raise DataError(path, "file is not UTF-8 text") from None
    except OSError as exc:
        raise DataError(path, f"cannot read file: {exc.strerror or exc}") from None
    return text.splitlines()


def _text(element: ET.Element, tag: str, path: Path, default: str | None = None) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if default is not None:
            return default
        raise DataError(path, f"annotation lacks <{tag}> in <{element.tag}>")
    return child.text.strip()


def _number(element: ET.Element, tag: str, path: Path, kind: Callable = float, default=None):
    raw = _text(element, tag, path, None if default is None else str(default))
    try:
        return kind(float(raw)) if kind is int else kind(raw)
    except ValueError:
        raise DataError(path, f"<{tag}> is not a number: {raw!r}") from None


def _flag(element: ET.Element, tag: str, path: Path) -> bool:
    return bool(_number(element, tag, path, int, default=0))


class VOCDevkit:
    """One ``VOCdevkit`` directory: ``VOCDevkit(locate_devkit(data_root))``."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"VOCDevkit({str(self.root)!r})"

    def year_dir(self, year: str | int) -> Path:
        path = self.root / f"VOC{year}"
        if not path.is_dir():
            raise DataError(path, f"VOC{year} is missing from this VOCdevkit")
        return path

    # -- image sets ---------------------------------------------------------------------

    def split_path(self, year: str | int, split: str, task: str = "Main") -> Path:
        return self.year_dir(year) / "ImageSets" / task / f"{split}.txt"

    def read_split(self, year: str | int, split: str, task: str = "Main") -> list[str]:
        """Image ids of ``ImageSets/<task>/<split>.txt`` (task ``Main`` or ``Segmentation``)."""
        path = self.split_path(year, split, task)
        ids: list[str] = []
        for number, line in enumerate(_read_lines(path), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 1:
                raise DataError(path, f"line {number}: expected one image id, got {line!r}")
            ids.append(fields[0])
        if not ids:
            raise DataError(path, "split file is empty")
        if len(set(ids)) != len(ids):
            raise DataError(path, "split file lists an image id twice")
        return ids

    def read_class_labels(
        self, year: str | int, split: str, classes: Sequence[str] = VOC_CLASSES
    ) -> tuple[list[str], np.ndarray]:
        """Per-image labels from ``ImageSets/Main/<class>_<split>.txt``.

        Returns the ids of ``<split>.txt`` (in that order) and an int8 array ``[N, C]`` with
        1 (present), -1 (absent) and 0 (only difficult instances).
        """
        image_ids = self.read_split(year, split)
        row_of = {image_id: row for row, image_id in enumerate(image_ids)}
        labels = np.zeros((len(image_ids), len(classes)), dtype=np.int8)
        main = self.year_dir(year) / "ImageSets" / "Main"
        for column, name in enumerate(classes):
            path = main / f"{name}_{split}.txt"
            seen = np.zeros(len(image_ids), dtype=bool)
            for number, line in enumerate(_read_lines(path), start=1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2 or fields[1] not in ("1", "-1", "0"):
                    raise DataError(
                        path, f"line {number}: expected '<image id> <1|-1|0>', got {line!r}"
                    )
                row = row_of.get(fields[0])
                if row is None:
                    raise DataError(
                        path,
                        f"line {number}: image id {fields[0]!r} is not in {split}.txt",
                    )
                labels[row, column] = int(fields[1])
                seen[row] = True
            if not seen.all():
                missing = [image_ids[i] for i in np.flatnonzero(~seen)[:3]]
                raise DataError(
                    path,
                    f"{int((~seen).sum())} image ids of {split}.txt have no label here "
                    f"(e.g. {', '.join(missing)})",
                )
        return image_ids, labels

    # -- per-image files ----------------------------------------------------------------

    def image_path(self, year: str | int, image_id: str) -> Path:
        return self.year_dir(year) / "JPEGImages" / f"{image_id}.jpg"

    def annotation_path(self, year: str | int, image_id: str) -> Path:
        return self.year_dir(year) / "Annotations" / f"{image_id}.xml"

    def mask_path(self, year: str | int, image_id: str) -> Path:
        return self.year_dir(year) / "SegmentationClass" / f"{image_id}.png"

    def load_image(self, year: str | int, image_id: str) -> torch.Tensor:
        return load_image(self.image_path(year, image_id))

    def read_annotation(self, year: str | int, image_id: str) -> Annotation:
        """Parse ``Annotations/<id>.xml``; missing ``difficult``/``truncated`` count as 0."""
        path = self.annotation_path(year, image_id)
        try:
            root = ET.parse(path).getroot()
        except FileNotFoundError:
            raise DataError(path, "annotation file is missing") from None
        except ET.ParseError as exc:
            raise DataError(path, f"malformed XML: {exc}") from None
        except OSError as exc:
            raise DataError(path, f"cannot read annotation: {exc.strerror or exc}") from None
        if root.tag != "annotation":
            raise DataError(path, f"root element is <{root.tag}>, expected <annotation>")
        size = root.find("size")
        if size is None:
            raise DataError(path, "annotation lacks <size>")
        objects = []
        for element in root.findall("object"):
            box = element.find("bndbox")
            if box is None:
                raise DataError(path, "an <object> lacks <bndbox>")
            bbox = tuple(_number(box, tag, path) for tag in ("xmin", "ymin", "xmax", "ymax"))
            objects.append(
                VOCObject(
                    name=_text(element, "name", path),
                    bbox=bbox,  # type: ignore[arg-type]
                    difficult=_flag(element, "difficult", path),
                    truncated=_flag(element, "truncated", path),
                    pose=_text(element, "pose", path, default="Unspecified"),
                )
            )
        return Annotation(
            image_id=image_id,
            width=_number(size, "width", path, int),
            height=_number(size, "height", path, int),
            depth=_number(size, "depth", path, int, default=3),
            segmented=_flag(root, "segmented", path),
            objects=objects,
        )

    def read_mask(self, year: str | int, image_id: str) -> np.ndarray:
        """Class-index mask ``uint8 [H, W]`` from a palette (or greyscale) PNG."""
        path = self.mask_path(year, image_id)
        try:
            with Image.open(path) as image:
                if image.mode not in ("P", "L"):
                    raise DataError(
                        path, f"mask is a {image.mode} image, expected a palette (P) or L PNG"
                    )
                return np.array(image, dtype=np.uint8)
        except FileNotFoundError:
            raise DataError(path, "mask file is missing") from None
        except DataError:
            raise
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(path, f"cannot read mask (corrupt or truncated?): {exc}") from None


class VOCClassificationDataset(Dataset):
    """Images of a VOC ``Main`` split with their 20 class labels (1 / -1 / 0).

    Item ``i`` is ``(image, labels)``: ``image`` the uint8 ``[3, H, W]`` tensor, or
    ``transform(image)``; ``labels`` an int8 tensor ``[C]``.
    """

    def __init__(
        self,
        devkit: VOCDevkit | Path | str,
        year: str | int,
        split: str,
        transform: Callable | None = None,
        classes: Sequence[str] = VOC_CLASSES,
    ):
        if not isinstance(devkit, VOCDevkit):
            devkit = VOCDevkit(locate_devkit(devkit))
        self.devkit = devkit
        self.year = str(year)
        self.split = split
        self.transform = transform
        self.classes = tuple(classes)
        self.image_ids, self.labels = devkit.read_class_labels(year, split, classes)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int):
        image = self.devkit.load_image(self.year, self.image_ids[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, torch.from_numpy(self.labels[index].copy())
