"""The clips a video or audio method pretrains on, with a held-out part.

By default the ``clips`` folder of the data root (the synthetic world's); a method's
``video_dir`` setting points at any folder of ordinary video files instead.
"""

from __future__ import annotations

import math
from pathlib import Path

from ...interfaces import DataError
from ..datasets import locate_clips
from .clip_cache import ClipSet, load_clips
from .pretext_pool import split_held_out
from .streaming import choose_data_mode
from .video import list_videos


def clip_folder(data_root: Path, video_dir: str | Path | None) -> Path:
    """``video_dir`` when given (it must exist), else the data root's ``clips`` folder."""
    if video_dir:
        path = Path(video_dir).expanduser()
        if not path.is_dir():
            raise DataError(path, "video_dir: folder not found")
        return path
    return locate_clips(data_root)


def load_clip_split(folder: Path, cfg: dict, size: int, held_out: float, seed: int,
                    audio: bool, cache_dir: Path | None, progress=None, log=None, what: str = "clips"):
    """Decode ``folder`` (settings ``frames``, ``frame_rate``; with ``audio``: ``audio_rate``,
    ``audio_seconds``) and split its clips into (clips, train indices, held-out indices).

    The setting ``data`` (default ``memory``) decides whether the frames are decoded into memory
    or streamed from disk (``data_workers`` threads); ``auto`` chooses by their decoded size."""
    n_frames = len(list_videos(folder)) * cfg["frames"]
    mode = choose_data_mode(cfg.get("data", "memory"), n_frames, size, what, log,
                            max_images=math.inf, unit="frames")
    clips: ClipSet = load_clips(folder, cfg["frames"], size, cfg["frame_rate"],
                                cfg.get("audio_rate", 16_000),
                                cfg.get("audio_seconds", 1.0) if audio else None,
                                need_audio=audio, cache_dir=cache_dir, progress=progress,
                                stream=mode == "stream", threads=cfg.get("data_workers", 2))
    if len(clips) < 2:
        raise DataError(folder, f"{len(clips)} clip(s): at least 2 are needed (one to train on, "
                                "one held out)")
    train, held = split_held_out(len(clips), held_out, seed)
    return clips, train, held
