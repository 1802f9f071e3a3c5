"""Video files with sound: reading ordinary files (and writing the synthetic world's) with PyAV.

:func:`read_clip` turns one video file (mp4, mkv, avi, webm, mov...) into ``frames`` frames,
resized (shorter side to ``size``, then a centred square crop) as uint8 ``[T, size, size, 3]``
RGB, and its first audio stream as mono float32 samples at ``audio_rate``. Frames are taken
from the start of the file: every decoded frame, or one every ``1 / frame_rate`` seconds. A
file that cannot be opened, is truncated, is too short or (when sound is required) has no
audio stream raises :class:`~benchharness.interfaces.DataError` naming the file and the problem.

:func:`write_clip` writes frames and samples as an MPEG-4 Part 2 video with 16-bit PCM audio in
a Matroska file, bit-exactly (the same input gives the same bytes), which is how the synthetic
world stores its clips.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from ...interfaces import DataError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
"""File name endings :func:`list_videos` treats as videos (case-insensitive)."""


def list_videos(directory: Path | str) -> list[Path]:
    """The video files directly in ``directory``, sorted by name; a DataError when there are none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(directory, "video folder not found")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not paths:
        raise DataError(directory, f"no video files ({', '.join(VIDEO_EXTENSIONS)}) found")
    return paths


def write_clip(path: Path | str, frames: np.ndarray, audio: np.ndarray | None, fps: int,
               sample_rate: int, quality: int = 3) -> None:
    """Write uint8 RGB ``frames`` [T, H, W, 3] at ``fps`` and mono float ``audio`` in [-1, 1] at
    ``sample_rate`` (or no audio stream when None) to a Matroska file (MPEG-4 video at fixed
    quantiser ``quality``, 16-bit PCM audio), bit-exactly."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    count, height, width, _ = frames.shape
    with av.open(str(path), "w", format="matroska", options={"fflags": "+bitexact"}) as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        flags = av.codec.context.Flags
        video.codec_context.flags |= flags.bitexact | flags.qscale  # fixed quantiser, no rate control
        video.codec_context.global_quality = quality * 118  # FF_QP2LAMBDA
        sound = None
        if audio is not None:
            sound = container.add_stream("pcm_s16le", rate=sample_rate, layout="mono")
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            samples = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767), -32768, 32767)
            chunk = sample_rate // 10  # 100 ms audio frames, as a recorder would write them
            for start in range(0, len(samples), chunk):
                block = samples[start:start + chunk].astype(np.int16)[None]
                frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = start
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)


def square_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize an [H, W, 3] frame so that its shorter side is ``size``, then crop the centre square."""
    height, width = frame.shape[:2]
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    x0, y0 = (new_w - size) // 2, (new_h - size) // 2
    return frame[y0:y0 + size, x0:x0 + size]


def read_clip(path: Path | str, frames: int, size: int, frame_rate: float | None = None,
              audio_rate: int = 16_000, audio_seconds: float | None = 1.0,
              need_audio: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode the start of one video file.

    Returns ``(frames uint8 [frames, size, size, 3], audio float32 [round(audio_seconds *
    audio_rate)] or None)``. ``frame_rate`` None takes consecutive frames at the file's own
    rate. ``audio_seconds`` None skips the sound; without an audio stream the result is None,
    or a DataError when ``need_audio``.
    """
    path = Path(path)
    want_audio = audio_seconds is not None
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DataError(path, f"not a readable video file ({exc})") from None
    with container:
        if not container.streams.video:
            raise DataError(path, "has no video stream")
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        if want_audio and audio is None and need_audio:
            raise DataError(path, "has no audio stream (this method learns from the clips' sound)")
        streams = [video] + ([audio] if want_audio and audio is not None else [])
        n_samples = round(audio_seconds * audio_rate) if want_audio else 0
        resampler = (av.AudioResampler(format="flt", layout="mono", rate=audio_rate)
                     if len(streams) == 2 else None)
        # a frame is taken at the first decoded time at or after k / frame_rate (less a quarter
        # of the file's own frame interval, for time stamps rounded down)
        slack = 0.25 / float(video.average_rate) if video.average_rate else 1e-3
        picked: list[np.ndarray] = []
        chunks: list[np.ndarray] = []
        have_samples = 0
        first_time = None
        try:
            for packet in container.demux(streams):
                if packet.stream is video and len(picked) < frames:
                    for frame in packet.decode():
                        if len(picked) >= frames:
                            break
                        time = frame.time if frame.time is not None else len(picked) / 25
                        first_time = time if first_time is None else first_time
                        if frame_rate is None or time - first_time >= len(picked) / frame_rate - slack:
                            picked.append(square_resize(frame.to_ndarray(format="rgb24"), size))
                elif resampler is not None and packet.stream is audio and have_samples < n_samples:
                    for frame in packet.decode():
                        for out in resampler.resample(frame):
                            block = out.to_ndarray().reshape(-1)
                            chunks.append(block)
                            have_samples += len(block)
                if len(picked) >= frames and (resampler is None or have_samples >= n_samples):
                    break
            if resampler is not None and have_samples < n_samples:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1))
                    have_samples += chunks[-1].size
        except av.FFmpegError as exc:
            raise DataError(path, f"decoding failed after {len(picked)} frames ({exc}); "
                                  "the file is damaged or truncated") from None
        if len(picked) < frames:
            promised = _promised_frames(container, video)
            if promised and promised > len(picked):
                raise DataError(path, f"only {len(picked)} of the {promised} video frames its header "
                                      f"promises could be decoded ({frames} needed): truncated or damaged")
            raise DataError(path, f"has {len(picked)} decodable video frames; {frames} are needed"
                                  + (f" at {frame_rate} frames per second" if frame_rate else ""))
        sound = None
        if resampler is not None:
            sound = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
            if len(sound) < 0.9 * n_samples:
                raise DataError(path, f"has {len(sound) / audio_rate:.2f} s of decodable audio; "
                                      f"{audio_seconds} s are needed (too short, truncated or damaged)")
            sound = np.pad(sound[:n_samples], (0, max(0, n_samples - len(sound))))
    return np.stack(picked), sound


def _promised_frames(container, video) -> int:
    """How many frames the file's header says the video stream has (0 when it does not say)."""
    if video.frames:
        return int(video.frames)
    if not video.average_rate:
        return 0
    if video.duration and video.time_base:
        seconds = float(video.duration * video.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        return 0
    return int(seconds * float(video.average_rate) + 0.5)
