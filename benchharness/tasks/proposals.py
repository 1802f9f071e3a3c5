"""Object proposals for Fast R-CNN: selective search computed once and cached, or user files.

Boxes here are ``float32 [K, 4]`` arrays ``(x1, y1, x2, y2)`` in the VOC annotation convention
(1-based pixel indices, both ends inclusive), one array per image id; :func:`to_continuous`
turns them into the continuous coordinates torchvision's ops use (pixel ``i`` covers
``[i - 1, i)``, so widths and IoUs agree with the devkit's inclusive ones).

Sources:

- **Selective search** (Uijlings et al. 2013) through OpenCV contrib's ``ximgproc``, ``fast``
  (the Fast R-CNN setting) or ``quality`` mode, run once per image and cached as one ``.npz``
  per split under ``<cache>/proposals/<key>/`` (the key hashes the devkit, year and mode), so
  every later job, seed and process reuses it.
- **Precomputed files** given by the user: Fast R-CNN's per-split selective-search ``.mat``
  files (``voc_2007_trainval.mat``, ``voc_2007_test.mat``; ``boxes``: a cell of ``[K, 4]``
  arrays in MATLAB's 1-based ``(y1, x1, y2, x2)``, ``images``: the ids, optional), or an
  ``.npz`` mapping each image id to its ``(x1, y1, x2, y2)`` boxes in the VOC convention (the
  format of the cache files, so a cache file is a valid input).
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .. import atomic
from ..interfaces import DataError
from ..locks import FileLock
from ..suite import config_hash

MODES = ("fast", "quality")


def selective_search(image_bgr: np.ndarray, mode: str = "fast") -> np.ndarray:
    """Selective-search boxes of one ``uint8 [H, W, 3]`` BGR image, VOC convention, float32 [K, 4]."""
    import cv2  # opencv-contrib-python-headless

    if mode not in MODES:
        raise ValueError(f"selective search mode must be one of {MODES}, got {mode!r}")
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(image_bgr)
    if mode == "fast":
        ss.switchToSelectiveSearchFast()
    else:
        ss.switchToSelectiveSearchQuality()
    rects = np.asarray(ss.process(), dtype=np.float32).reshape(-1, 4)  # x, y, w, h (0-based)
    x, y, w, h = rects.T
    return unique_boxes(np.stack([x + 1, y + 1, x + w, y + h], axis=1))


def unique_boxes(boxes: np.ndarray) -> np.ndarray:
    """``boxes`` without exact duplicates, sorted row by row.

    OpenCV ranks its selective-search boxes with a random factor it does not let us seed, so
    the same image gives the same set in a different order on every call; sorting makes the
    proposals (and so every result computed from them) reproducible.
    """
    return np.unique(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), axis=0)


def to_continuous(boxes: np.ndarray | torch.Tensor) -> torch.Tensor:
    """VOC-convention boxes -> continuous ``(x1, y1, x2, y2)`` (``x1 - 1``, ``y1 - 1``, ``x2``, ``y2``)."""
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4).clone()
    b[:, :2] -= 1
    return b


def to_voc(boxes: torch.Tensor) -> torch.Tensor:
    """Continuous boxes -> VOC convention (the inverse of :func:`to_continuous`)."""
    b = boxes.clone()
    b[:, :2] += 1
    return b


def _read_image_bgr(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(path, "cannot decode image for selective search (missing or corrupt?)")
    return image


def compute_selective_search(paths: Sequence[Path], mode: str = "fast", workers: int = 2,
                             progress: Callable | None = None, desc: str = "selective search"
                             ) -> list[np.ndarray]:
    """Selective search over image files; OpenCV releases the GIL, so threads run in parallel."""
    def one(path):
        return selective_search(_read_image_bgr(path), mode)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(one, paths)
        if progress is not None:
            results = progress(results, total=len(paths), desc=desc, leave=False)
        return list(results)


def save_npz(path: Path, proposals: dict[str, np.ndarray]) -> None:
    """Write ``image id -> boxes`` atomically as an ``.npz``."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, dtype=np.float32) for k, v in proposals.items()})
    atomic.write_bytes(path, buffer.getvalue())


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read an ``.npz`` of ``image id -> [K, 4]`` boxes (VOC convention)."""
    try:
        with np.load(path) as data:
            out = {k: np.asarray(data[k], dtype=np.float32).reshape(-1, 4) for k in data.files}
    except FileNotFoundError:
        raise DataError(path, "proposals file not found") from None
    except (ValueError, OSError) as exc:
        raise DataError(path, f"not a readable .npz of image id -> boxes ({exc})") from None
    return out


def load_mat(path: Path, image_ids: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read Fast R-CNN's selective-search ``.mat``: ``boxes``, a cell of ``[K, 4]`` arrays in
    MATLAB's 1-based ``(y1, x1, y2, x2)``, and ``images``, the ids they belong to.

    Fast R-CNN itself (``pascal_voc._load_selective_search_roidb``) ignores ``images`` and takes
    the i-th cell for the i-th id of the split; a file without ``images`` is read that way when
    ``image_ids`` is given, and then its cell count must equal the split's size.
    """
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise DataError(path, "proposals file not found") from None
    except (ValueError, OSError, NotImplementedError, TypeError, scipy.io.matlab.MatReadError) as exc:
        raise DataError(path, f"not a readable .mat file ({exc})") from None
    if "boxes" not in data or ("images" not in data and image_ids is None):
        raise DataError(path, "expected variables 'boxes' and 'images' (Fast R-CNN's format)")
    boxes = data["boxes"].ravel()
    if "images" in data:
        images = [str(np.asarray(name).ravel()[0]) for name in data["images"].ravel()]
        if len(boxes) != len(images):
            raise DataError(path, f"{len(boxes)} box arrays for {len(images)} images")
    else:
        images = list(image_ids)
        if len(boxes) != len(images):
            raise DataError(path, f"{len(boxes)} box arrays for the {len(images)} images of the "
                                  "split (a file without 'images' must hold one per image, in "
                                  "the split's order)")
    out = {}
    for image_id, b in zip(images, boxes):
        b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
        out[image_id] = b[:, [1, 0, 3, 2]]  # Fast R-CNN: raw[:, (1, 0, 3, 2)], then its own -1
    return out


def load_proposals_file(path: Path | str, image_ids: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Proposals from a user file: ``.mat`` (Fast R-CNN's) or ``.npz`` (image id -> boxes);
    ``image_ids`` (the split's, in order) serves ``.mat`` files without ``images``."""
    path = Path(path).expanduser()
    if path.suffix == ".mat":
        return load_mat(path, image_ids)
    if path.suffix == ".npz":
        return load_npz(path)
    raise DataError(path, "proposals must be a .mat (Fast R-CNN's selective search) or an .npz")


def _select(found: dict[str, np.ndarray], image_ids: Sequence[str], source: Path) -> list[np.ndarray]:
    missing = [i for i in image_ids if i not in found]
    if missing:
        raise DataError(source, f"no proposals for {len(missing)} images of the split "
                                f"(e.g. {', '.join(missing[:3])})")
    return [found[i] for i in image_ids]


def split_proposals(image_ids: Sequence[str], image_path: Callable[[str], Path], split_name: str,
                    cache_root: Path, data_key: dict, source: str = "selective_search",
                    mode: str = "fast", workers: int = 2, progress=None,
                    log: Callable[[str], None] = print,
                    file_names: Sequence[str] = ()) -> tuple[list[np.ndarray], bool]:
    """Proposals of every image of a split, in ``image_ids`` order; (boxes, came_from_cache).

    ``source`` is ``selective_search`` or a path to a ``.mat`` / ``.npz`` (or a folder holding
    ``<name>.mat`` / ``.npz`` for the first of ``file_names``, then ``split_name``, that exists:
    Fast R-CNN's ``selective_search_data`` folder names them ``voc_2007_trainval.mat``).
    Selective search is cached under ``cache_root / <hash of data_key and mode> /
    <split_name>.npz``; a lock keeps two processes from computing the same split twice.
    """
    if source != "selective_search":
        path = Path(source).expanduser()
        if path.is_dir():
            stems = list(dict.fromkeys([*file_names, split_name]))
            candidates = [path / f"{stem}{ext}" for stem in stems for ext in (".mat", ".npz")]
            found = [c for c in candidates if c.is_file()]
            if not found:
                raise DataError(path, f"none of {', '.join(c.name for c in candidates)} in this folder")
            path = found[0]
        return _select(load_proposals_file(path, image_ids), image_ids, path), True
    key = config_hash({**data_key, "mode": mode, "method": "opencv-selective-search"})
    cache_file = Path(cache_root) / key / f"{split_name}.npz"

    def cached():
        if cache_file.is_file():
            try:
                found = load_npz(cache_file)
            except DataError:  # torn or foreign file: compute again
                return None
            if all(i in found for i in image_ids):
                return [found[i] for i in image_ids]
        return None

    hit = cached()
    if hit is not None:
        return hit, True
    with FileLock(cache_file.with_suffix(".lock")):
        hit = cached()
        if hit is not None:
            return hit, True
        log(f"selective search ({mode}) on {len(image_ids)} images of {split_name}; "
            f"cached in {cache_file.parent}")
        boxes = compute_selective_search([image_path(i) for i in image_ids], mode, workers,
                                         progress, f"selective search {split_name}")
        save_npz(cache_file, dict(zip(image_ids, boxes)))
    return boxes, False
