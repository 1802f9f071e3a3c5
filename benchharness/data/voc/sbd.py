"""The Semantic Boundaries Dataset (SBD, Hariharan et al. 2011) and the ``seg11valid`` split.

SBD's ``benchmark_RELEASE/dataset`` folder holds ``img/<id>.jpg``, ``cls/<id>.mat`` (the class
mask in ``GTcls.Segmentation``) and the split files ``train.txt`` (8498 ids) and ``val.txt``.
FCN (shelhamer/fcn.berkeleyvision.org, ``voc_layers.SBDDSegDataLayer``) trains on SBD ``train``
and scores on ``seg11valid``: the 736 images of VOC2011's segmentation ``val`` that are not in
SBD ``train`` (``data/pascal/seg11valid.txt`` there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ...interfaces import DataError
from .devkit import VOCDevkit, load_image

SEG11VALID = "seg11valid"


def read_sbd_split(root: Path | str, split: str) -> list[str]:
    """Image ids of SBD's ``<split>.txt`` (``train`` or ``val``)."""
    path = Path(root).expanduser() / f"{split}.txt"
    if not path.is_file():
        raise DataError(path, "SBD split file missing (expected benchmark_RELEASE/dataset)")
    return path.read_text().split()


def read_sbd_mask(root: Path | str, image_id: str) -> np.ndarray:
    """The uint8 class mask of ``cls/<image_id>.mat`` (``GTcls.Segmentation``)."""
    import scipy.io

    mat_path = Path(root).expanduser() / "cls" / f"{image_id}.mat"
    try:
        gt = scipy.io.loadmat(str(mat_path))["GTcls"]
        return np.asarray(np.asarray(gt["Segmentation"]).ravel()[0], dtype=np.uint8)
    except (OSError, KeyError, ValueError, IndexError, TypeError, scipy.io.matlab.MatReadError) as exc:
        raise DataError(mat_path, f"cannot read the SBD mask ({exc})") from None


def read_sbd(root: Path | str, exclude: set[str], splits: Sequence[str] = ("train", "val")
             ) -> Iterator[tuple[str, torch.Tensor, np.ndarray]]:
    """SBD's images and class masks of ``splits``, each id once, leaving out the ids in
    ``exclude``; yields ``(image_id, image, mask)``."""
    root = Path(root).expanduser()
    ids = [i for split in splits for i in read_sbd_split(root, split) if i not in exclude]
    for image_id in dict.fromkeys(ids):
        mask = read_sbd_mask(root, image_id)
        yield image_id, load_image(root / "img" / f"{image_id}.jpg"), mask


def seg11valid(devkit: VOCDevkit, year: str, sbd_root: str) -> tuple[list[str], str]:
    """The ids of ``seg11valid`` and how they were found.

    In order: ``VOC<year>/ImageSets/Segmentation/seg11valid.txt`` when the devkit has it (FCN's
    file can be copied there); else, with ``sbd_root``, VOC2011's segmentation ``val`` minus SBD
    ``train`` when the devkit holds VOC2011 (FCN's derivation: 736 images); else VOC<year>'s
    ``val`` minus SBD ``train``, which for VOC2012 is a superset of FCN's 736 (VOC2012 ``val``
    adds images to VOC2011's).
    """
    own = devkit.split_path(year, SEG11VALID, "Segmentation")
    if own.is_file():
        return devkit.read_split(year, SEG11VALID, "Segmentation"), f"read from {own}"
    if not sbd_root:
        raise DataError(own, "seg11valid is not in the devkit; set sbd_root (SBD's "
                             "benchmark_RELEASE/dataset) to derive it as VOC val minus SBD train, "
                             "or copy FCN's data/pascal/seg11valid.txt here")
    sbd_train = set(read_sbd_split(sbd_root, "train"))
    base_year = year
    if (devkit.root / "VOC2011").is_dir() and devkit.split_path("2011", "val", "Segmentation").is_file():
        base_year = "2011"
    ids = [i for i in devkit.read_split(base_year, "val", "Segmentation") if i not in sbd_train]
    if not ids:
        raise DataError(own, f"VOC{base_year} val minus SBD train is empty")
    return ids, f"VOC{base_year} Segmentation val minus SBD train ({len(ids)} images)"
