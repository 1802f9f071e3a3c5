"""egomotion's data: sequences of frames with the camera's pose at each frame.

The format (the synthetic world's ``<root>/egomotion``, or any folder given as
``sequence_dir``): one sub-folder per sequence, holding its frames (``.png``, ``.jpg``,
``.jpeg``) and ``poses.csv`` with the header ``frame,tx,ty,rz`` and one row per frame, in time
order: the frame's file name (relative to the sequence's folder), the camera's position
``(tx, ty)`` in a fixed world frame and its heading ``rz`` in degrees (the convention of
:mod:`benchharness.data.synthetic.egomotion`). Frames not named in ``poses.csv`` are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from benchharness.interfaces import DataError

POSES = "poses.csv"
COLUMNS = ("frame", "tx", "ty", "rz")


@dataclass
class PoseSequence:
    """One sequence: its folder, frame files in time order and poses [T, 3] (tx, ty, rz)."""

    folder: Path
    frames: list[Path]
    poses: np.ndarray


def read_poses(path: Path) -> tuple[list[str], np.ndarray]:
    """The frame names and poses [T, 3] of one ``poses.csv``; DataError naming the file on a
    missing column, a non-number, an empty or duplicated frame name, or fewer than 2 rows."""
    try:
        table = pd.read_csv(path, dtype={"frame": str})
    except FileNotFoundError:
        raise DataError(path, "no poses file (each sequence folder needs poses.csv: frame,tx,ty,rz)") from None
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read the poses: {exc}") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}; the header must be "
                              f"{','.join(COLUMNS)}")
    values = table[list(COLUMNS[1:])].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1) | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan)).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(path, f"row {row + 2}: tx, ty and rz must be finite numbers, got "
                              f"{table.iloc[row][list(COLUMNS[1:])].tolist()}")
    names = table["frame"].fillna("").astype(str).str.strip()
    if (names == "").any():
        raise DataError(path, f"row {int(np.flatnonzero((names == '').to_numpy())[0]) + 2}: empty frame name")
    duplicated = names[names.duplicated()]
    if len(duplicated):
        raise DataError(path, f"frame {duplicated.iloc[0]!r} is listed twice")
    if len(table) < 2:
        raise DataError(path, f"{len(table)} frame(s): a sequence needs at least 2")
    return names.tolist(), values.to_numpy(dtype=np.float64)


def list_sequences(folder: Path) -> list[PoseSequence]:
    """Every sequence of ``folder`` (sub-folders with ``poses.csv``, sorted by name); DataError
    when there are none or a listed frame file is missing."""
    if not folder.is_dir():
        raise DataError(folder, "no sequence folder (frames with camera poses; synthetic worlds have "
                                "<root>/egomotion, added by a run at the suite's own data_root; for "
                                "your own set `sequence_dir` in the method's suite section)")
    sequences = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        names, poses = read_poses(sub / POSES)
        files = [sub / name for name in names]
        for file in files:
            if not file.is_file():
                raise DataError(sub / POSES, f"frame {file.name!r} is listed but {file} does not exist")
        sequences.append(PoseSequence(sub, files, poses))
    if not sequences:
        raise DataError(folder, "holds no sequence (sub-folders with frames and poses.csv)")
    return sequences


def decode_frame(path: Path, size: int) -> torch.Tensor:
    """A frame as uint8 [3, size, size]: the shorter side resized to ``size``, then the centre
    square (so one pixel keeps one scale along both axes)."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(path, f"cannot read the frame: {exc}") from None
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
    tensor = TF.resize(tensor, size, antialias=True)
    return TF.center_crop(tensor, size)


def load_frames(sequences: list[PoseSequence], size: int, progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """All frames as uint8 [N, 3, size, size] and the index of each sequence's first frame
    (``offsets[s]`` .. ``offsets[s + 1]`` are sequence s's)."""
    files = [f for s in sequences for f in s.frames]
    iterate = progress(files, desc="egomotion frames", total=len(files)) if progress else files
    frames = torch.stack([decode_frame(f, size) for f in iterate])
    offsets = torch.tensor(np.cumsum([0] + [len(s.frames) for s in sequences]))
    return frames, offsets
