"""The synthetic world's selective-search proposals, computed once when the world is made.

Fast R-CNN does not run selective search: it reads precomputed boxes, one file per split
(``data/selective_search_data/voc_2007_trainval.mat``, ``voc_2007_test.mat``), downloaded with
the code. The synthetic world ships the same folder, ``<world>/selective_search_data/`` with
``voc_2007_trainval.npz`` and ``voc_2007_test.npz`` (image id -> ``(x1, y1, x2, y2)`` boxes in
the VOC convention, :mod:`benchharness.tasks.proposals`' ``.npz`` format), computed with the
function ``voc07-det``'s ``proposals = "selective_search"`` runs (OpenCV, fast mode). A suite that
names the folder (``proposals = "selective_search_data"``, resolved under the data root) gets
the same boxes without spending a minute of every fresh results directory on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

FOLDER = "selective_search_data"
YEAR = "2007"
SPLITS = ("trainval", "test")
MODE = "fast"


def proposal_file(root: Path | str, split: str) -> Path:
    """Where the world keeps the proposals of VOC2007 ``split``."""
    return Path(root) / FOLDER / f"voc_{YEAR}_{split}.npz"


def write_proposals(root: Path | str, progress: Callable | None = None, workers: int = 2) -> bool:
    """Compute the proposals of every VOC2007 split of the world at ``root`` that has no file
    yet; True when one was written. Each file is written atomically, so an interrupted run
    leaves whole files only and the next call computes the rest."""
    from ...tasks.proposals import compute_selective_search, save_npz

    voc = Path(root) / "VOCdevkit" / f"VOC{YEAR}"
    wrote = False
    for split in SPLITS:
        out = proposal_file(root, split)
        if out.is_file():
            continue
        ids = (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        boxes = compute_selective_search([voc / "JPEGImages" / f"{i}.jpg" for i in ids], MODE,
                                         workers, progress, f"selective search {split}")
        out.parent.mkdir(parents=True, exist_ok=True)
        save_npz(out, dict(zip(ids, boxes)))
        wrote = True
    return wrote


def ensure_proposals(root: Path | str, progress: Callable | None = None) -> bool:
    """Add the proposals to a complete synthetic world made before worlds had them; True when
    some were computed. A real data root, an incomplete world or one without VOC2007's split
    files is left alone."""
    from .world import is_synthetic_world  # world imports this module

    root = Path(root)
    if not (root / ".complete").is_file() or not is_synthetic_world(root):
        return False
    splits = root / "VOCdevkit" / f"VOC{YEAR}" / "ImageSets" / "Main"
    if not all((splits / f"{split}.txt").is_file() for split in SPLITS):
        return False  # no VOC2007 to compute them from
    return write_proposals(root, progress)  # computes only the splits without a file
