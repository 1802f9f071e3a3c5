"""The datasets the built-in tasks and methods read, and where each is found under a data root."""

from __future__ import annotations

from pathlib import Path

from ..hookspecs import hookimpl
from ..interfaces import DataError, DatasetSpec
from .voc.devkit import locate_devkit


def _voc_year(year: str):
    def locate(data_root: Path) -> Path:
        devkit = locate_devkit(data_root)
        path = devkit / f"VOC{year}"
        if not path.is_dir():
            raise DataError(path, f"PASCAL VOC {year} is expected here; download it "
                                  f"(`benchharness data fetch voc{year}`) or generate the synthetic "
                                  "world with `benchharness data synth --out DIR`")
        return path
    return locate


def locate_source(data_root: Path) -> Path:
    """The labelled source set (ImageNet stand-in): an ImageFolder tree ``<root>/source/train``."""
    path = Path(data_root) / "source" / "train"
    if not path.is_dir():
        raise DataError(path, "labelled source set expected here as <class>/<image> folders "
                              "(the synthetic world has one; for ImageNet set `source_dir` in the "
                              "method's suite section)")
    return path


def locate_unlabelled(data_root: Path) -> Path:
    """The unlabelled image pool ``<root>/unlabelled``."""
    path = Path(data_root) / "unlabelled"
    if not path.is_dir():
        raise DataError(path, "unlabelled image pool expected here (a folder of images)")
    return path


def locate_clips(data_root: Path) -> Path:
    """The video clips (with sound) ``<root>/clips``: a folder of ordinary video files."""
    path = Path(data_root) / "clips"
    if not path.is_dir():
        raise DataError(path, "video clips with sound expected here (a folder of video files: mp4, "
                              "mkv, avi, webm, mov). Synthetic worlds have them: generate one with "
                              "`benchharness data synth --out DIR` (a smoke run adds them to an older "
                              "synthetic world at the suite's own data_root); for your own videos set `video_dir` in the method's "
                              "suite section")
    return path


@hookimpl
def benchharness_datasets():
    """PASCAL VOC 2007 and 2012 (real or synthetic), the labelled source set, the image pool,
    the video clips with sound."""
    return [
        DatasetSpec("voc2007", _voc_year("2007"), "PASCAL VOC 2007 in the VOCdevkit layout"),
        DatasetSpec("voc2012", _voc_year("2012"), "PASCAL VOC 2012 in the VOCdevkit layout"),
        DatasetSpec("source", locate_source, "labelled pretraining images (ImageNet stand-in)"),
        DatasetSpec("unlabelled", locate_unlabelled, "unlabelled pretraining images"),
        DatasetSpec("clips", locate_clips, "video clips with sound (tracking, sound)"),
    ]
