"""SBD's layout inside the synthetic world, so that FCN's reference setup (SBD ``train`` trains,
``seg11valid`` scores; see :mod:`..voc.sbd`) runs on it as on real data.

Made from the world's own VOC2012 segmentation images, as the real SBD overlaps VOC: SBD
``train`` holds VOC2012's segmentation ``train`` and the first quarter of its ``val`` (so
``seg11valid`` = ``val`` minus SBD ``train`` is a proper subset of ``val``, as it is for real
data), SBD ``val`` the next quarter of ``val``. Every VOC2012 segmentation image is there (the
file set does not depend on the split, hence on the seed): ``img/<id>.jpg`` is the VOC JPEG
byte for byte, ``cls/<id>.mat`` holds the VOC mask as ``GTcls.Segmentation``.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from ...interfaces import DataError

SBD_DIR = Path("benchmark_RELEASE") / "dataset"
"""Where SBD's dataset folder sits under a data root (as ``data fetch sbd`` extracts it)."""

_MAT_HEADER_BYTES = 116  # MAT-file v5: descriptive text, then subsystem offset, version, endianness


def mat_bytes(variables: dict) -> bytes:
    """A MAT-file (v5) of ``variables`` whose bytes depend on nothing else: scipy writes the
    creation time into the header text, which is replaced by a fixed one."""
    import scipy.io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables)
    data = bytearray(buffer.getvalue())
    header = b"MATLAB 5.0 MAT-file, synthetic SBD mask (benchharness)"
    data[:_MAT_HEADER_BYTES] = header.ljust(_MAT_HEADER_BYTES)
    return bytes(data)


def write_sbd(world: Path | str) -> Path:
    """Write ``benchmark_RELEASE/dataset`` into the synthetic ``world`` from its VOC2012
    segmentation split; returns the dataset folder."""
    from ..voc.devkit import VOCDevkit

    world = Path(world)
    devkit = VOCDevkit(world / "VOCdevkit")
    train = devkit.read_split("2012", "train", "Segmentation")
    val = devkit.read_split("2012", "val", "Segmentation")
    quarter = max(1, len(val) // 4)
    sbd_train = sorted(train + val[:quarter])
    sbd_val = sorted(val[quarter:2 * quarter])
    out = world / SBD_DIR
    if out.exists():  # never over what may be a user's real SBD
        raise DataError(out, "already exists; the synthetic SBD is written only into a new world")
    (out / "img").mkdir(parents=True)
    (out / "cls").mkdir()
    for image_id in sorted(set(train) | set(val)):  # SBD has images outside its splits' lists too
        shutil.copyfile(devkit.image_path("2012", image_id), out / "img" / f"{image_id}.jpg")
        mask = devkit.read_mask("2012", image_id)
        (out / "cls" / f"{image_id}.mat").write_bytes(mat_bytes({"GTcls": {"Segmentation": mask}}))
    for name, ids in (("train", sbd_train), ("val", sbd_val)):
        (out / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return out
