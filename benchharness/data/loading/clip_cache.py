"""A folder of video clips decoded once into arrays, cached on disk for later pretrainings.

:func:`load_clips` reads every video file of a folder with
:func:`benchharness.data.loading.video.read_clip` and returns their frames (uint8 ``[N, T, S, S, 3]``)
and, when asked, their sound (float32 ``[N, L]``). With a cache directory the arrays are stored
as ``.npy`` files under ``<cache>/clips/`` (atomically) and memory-mapped by the next run with the
same files (names, sizes, modification times) and the same decoding settings. With ``stream``
the frames are not decoded here but read when indexed (:class:`~benchharness.data.loading.clip_stream.
StreamedClips`); only the sound, small, is decoded and cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...suite import config_hash
from .clip_stream import StreamedClips
from .image_cache import cached_images
from .video import list_videos, read_clip


@dataclass
class ClipSet:
    """Decoded clips: ``frames`` uint8 [N, T, S, S, 3] (RGB) or the same streamed from disk
    (:class:`StreamedClips`), ``audio`` float32 [N, L] or None."""

    paths: list[Path]
    frames: torch.Tensor | StreamedClips
    audio: torch.Tensor | None
    audio_rate: int

    def __len__(self) -> int:
        return len(self.paths)


def load_clips(directory: Path | str, frames: int, size: int, frame_rate: float | None = None,
               audio_rate: int = 16_000, audio_seconds: float | None = None, need_audio: bool = False,
               cache_dir: Path | None = None, progress=None, stream: bool = False,
               threads: int = 2) -> ClipSet:
    """Every video of ``directory`` decoded as :func:`read_clip` does (a DataError names the
    first file that cannot be used); ``audio_seconds`` None reads no sound. ``stream``: the
    frames are read when indexed, on ``threads`` threads (the sound is still decoded here)."""
    paths = list_videos(directory)
    files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    key = config_hash({"dir": str(Path(directory).resolve()), "files": files, "frames": frames,
                       "size": size, "frame_rate": frame_rate, "audio_rate": audio_rate,
                       "audio_seconds": audio_seconds, "need_audio": need_audio})
    decoded: dict[str, torch.Tensor] = {}

    def decode_all() -> None:
        video = np.empty((0 if stream else len(paths), frames, size, size, 3), np.uint8)
        sound = None
        iterator = progress(paths, desc=f"decode {Path(directory).name}", leave=False) if progress else paths
        for i, path in enumerate(iterator):
            clip, audio = read_clip(path, frames, size, frame_rate, audio_rate, audio_seconds, need_audio)
            if not stream:
                video[i] = clip
            if audio_seconds is not None:
                if sound is None:
                    sound = np.zeros((len(paths), len(audio) if audio is not None else 0), np.float32)
                if audio is not None:
                    sound[i] = audio
        decoded["frames"] = torch.from_numpy(video)
        decoded["audio"] = torch.from_numpy(sound) if sound is not None else torch.zeros(0)

    def part(name: str):
        def get() -> torch.Tensor:
            if name not in decoded:
                decode_all()
            return decoded[name]
        return get

    base = Path(cache_dir) / "clips" if cache_dir is not None else None
    if stream:
        video = StreamedClips(paths, frames, size, frame_rate, threads)
    else:
        video, _ = cached_images(base / f"{key}-frames.npy" if base else None, part("frames"))
    audio = None
    if audio_seconds is not None:
        audio, _ = cached_images(base / f"{key}-audio.npy" if base else None, part("audio"))
    return ClipSet(paths, video, audio, audio_rate)
