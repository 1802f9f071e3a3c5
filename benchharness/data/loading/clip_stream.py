"""Video clips read from disk when a loop indexes them, instead of decoded into one array.

:class:`StreamedClips` stands where :class:`~benchharness.data.loading.clip_cache.ClipSet`'s ``frames``
array (uint8 ``[N, T, S, S, 3]``) would: the same shape and the indexing the clip methods use,
each clip decoded by :func:`~benchharness.data.loading.video.read_clip` (the function that fills the
array, so the frames are the same bits) on a few threads, the most recently used kept.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .video import read_clip


class StreamedClips:
    """Video files indexed like their decoded frames ``[N, T, S, S, 3]`` (uint8, RGB).

    ``clips[i]``: clip ``i``'s frames ``[T, S, S, 3]``; ``clips[a, b]`` with index arrays: frame
    ``b[k]`` of clip ``a[k]`` for every k (``[B, S, S, 3]``); ``clips[:, b]``: frames ``b`` of every
    clip (``[N, len(b), S, S, 3]``); ``clips[idx]`` with an index array: a still undecoded view of
    those clips. ``numpy()`` gives a view whose ``[i]`` is a numpy array (for the track miner).
    ``keep`` decoded clips are kept, so the query and tracked patches of one batch decode once.
    """

    def __init__(self, paths: Sequence[Path], frames: int, size: int, frame_rate: float | None = None,
                 threads: int = 2, keep: int = 64):
        self.paths = [Path(p) for p in paths]
        self.frames, self.size, self.frame_rate = frames, size, frame_rate
        self.threads, self.keep = max(1, int(threads)), keep
        self._recent: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(N, T, S, S, 3)``, as the decoded array's."""
        return (len(self.paths), self.frames, self.size, self.size, 3)

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, i: int) -> torch.Tensor:
        frames, _ = read_clip(self.paths[i], self.frames, self.size, self.frame_rate,
                              audio_seconds=None, need_audio=False)
        return torch.from_numpy(frames)

    def clips(self, indices: Sequence[int]) -> dict[int, torch.Tensor]:
        """The decoded frames of each clip in ``indices`` (a DataError names an unusable file)."""
        wanted = list(dict.fromkeys(int(i) for i in indices))
        missing = [i for i in wanted if i not in self._recent]
        if len(missing) > 1 and self.threads > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="clips")
            decoded = dict(zip(missing, self._pool.map(self._read, missing)))
        else:
            decoded = {i: self._read(i) for i in missing}
        out = {}
        for i in wanted:
            out[i] = decoded[i] if i in decoded else self._recent[i]
            self._recent[i] = out[i]
            self._recent.move_to_end(i)
        while len(self._recent) > self.keep:
            self._recent.popitem(last=False)
        return out

    @staticmethod
    def _as_list(index) -> list[int]:
        return torch.as_tensor(np.asarray(index), dtype=torch.int64).reshape(-1).tolist()

    def __getitem__(self, key):
        if isinstance(key, tuple):
            rows, cols = key
            if isinstance(rows, slice):  # every chosen clip, the same frames of each
                rows = list(range(len(self))[rows])
                got = self.clips(rows)
                return torch.stack([got[i][cols] for i in rows]) if rows else \
                    torch.empty((0, *self.shape[1:]), dtype=torch.uint8)[:, cols]
            rows, cols = self._as_list(rows), self._as_list(cols)
            got = self.clips(rows)
            if not rows:
                return torch.empty((0, *self.shape[2:]), dtype=torch.uint8)
            return torch.stack([got[r][c] for r, c in zip(rows, cols)])
        if isinstance(key, (int, np.integer)) or (torch.is_tensor(key) and key.dim() == 0):
            return self.clips([int(key)])[int(key)]
        chosen = list(range(len(self))[key]) if isinstance(key, slice) else self._as_list(key)
        return StreamedClips([self.paths[i] for i in chosen], self.frames, self.size, self.frame_rate,
                             self.threads, self.keep)

    def numpy(self) -> "_NumpyClips":
        """A view of the same clips whose ``[i]`` is a numpy array ``[T, S, S, 3]``."""
        return _NumpyClips(self)

    def __del__(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False)


class _NumpyClips:
    """``StreamedClips`` seen as a numpy array of clips: ``shape``, ``len`` and ``[i]``."""

    def __init__(self, clips: StreamedClips):
        self._clips = clips
        self.shape = clips.shape

    def __len__(self) -> int:
        return len(self._clips)

    def __getitem__(self, i: int) -> np.ndarray:
        return self._clips[int(i)].numpy()
