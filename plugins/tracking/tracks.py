"""Moving patches mined from a clip and tracked through it (Wang & Gupta 2015's data).

:func:`moving_boxes` finds what moves at frame ``t`` by three-frame differencing: a pixel
moves when it differs from both frame ``t - gap`` and frame ``t + gap`` (so the box is where
the object *is* at ``t``, not the smear of where it was), after a small blur; connected regions
of such pixels, closed by a dilation, larger than ``min_area``, are the candidate objects,
largest first. :func:`track_box` follows a box from one frame to a later one with an OpenCV
tracker (KCF, CSRT, MIL) or by template matching (normalised cross-correlation in a window
around the last position, the template refreshed every frame); a lost track gives None.
:func:`mine_pairs` puts both together: for a few query frames per clip, each moving box is
tracked ``track_frames`` frames on, and the (query, tracked) pair of square patches around the
two boxes is kept.

Boxes are ``(x, y, w, h)`` in integer pixels, 0-based, as OpenCV uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

TRACKERS = ("template", "kcf", "csrt", "mil")
"""Tracker names :func:`track_box` accepts."""


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def motion_map(frames: np.ndarray, t: int, gap: int = 2, detector: str = "median") -> np.ndarray:
    """Per-pixel motion at frame ``t`` of RGB ``frames`` [T, H, W, 3], blurred (uint8).

    ``median``: the absolute grey-level difference to the clip's temporal median (the static
    background, for a still camera). ``difference``: three-frame differencing, the smaller of
    the differences to frames ``t - gap`` and ``t + gap`` (no background model needed).
    """
    if detector == "median":
        grey = np.stack([_gray(f) for f in frames])
        background = np.median(grey, axis=0).astype(np.uint8)
        motion = cv2.absdiff(grey[t], background)
    elif detector == "difference":
        if t - gap < 0 or t + gap >= len(frames):
            raise ValueError(f"frame {t} needs frames {t - gap} and {t + gap}; the clip has {len(frames)}")
        before, now, after = (_gray(frames[i]) for i in (t - gap, t, t + gap))
        motion = np.minimum(cv2.absdiff(now, before), cv2.absdiff(after, now))
    else:
        raise ValueError(f"unknown detector {detector!r}; choose one of {DETECTORS}")
    return cv2.GaussianBlur(motion, (5, 5), 0)


DETECTORS = ("median", "difference")
"""Moving-region detectors :func:`motion_map` knows."""


def moving_boxes(frames: np.ndarray, t: int, gap: int = 2, threshold: int = 15,
                 min_area: int = 40, max_boxes: int = 2, detector: str = "median",
                 ) -> list[tuple[int, int, int, int]]:
    """Boxes (x, y, w, h) of the ``max_boxes`` largest moving regions at frame ``t``."""
    moving = (motion_map(frames, t, gap, detector) >= threshold).astype(np.uint8)
    moving = cv2.morphologyEx(moving, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(moving, connectivity=8)
    regions = sorted((stats[i] for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area),
                     key=lambda s: -int(s[cv2.CC_STAT_AREA]))
    return [tuple(int(v) for v in s[:4]) for s in regions[:max_boxes]]


def _opencv_tracker(name: str):
    factories = {"kcf": cv2.TrackerKCF, "csrt": cv2.TrackerCSRT, "mil": cv2.TrackerMIL}
    return factories[name].create()


def _template_step(previous: np.ndarray, current: np.ndarray, box, search: int, min_score: float):
    x, y, w, h = box
    template = previous[y:y + h, x:x + w]
    height, width = current.shape[:2]
    x0, y0 = max(0, x - search), max(0, y - search)
    x1, y1 = min(width, x + w + search), min(height, y + h + search)
    window = current[y0:y1, x0:x1]
    if window.shape[0] < h or window.shape[1] < w or template.size == 0:
        return None
    scores = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
    _, best, _, (bx, by) = cv2.minMaxLoc(scores)
    if not np.isfinite(best) or best < min_score:
        return None
    return (x0 + bx, y0 + by, w, h)


def track_box(frames: np.ndarray, start: int, box: tuple[int, int, int, int], stop: int,
              tracker: str = "template", search: int | None = None,
              min_score: float = 0.4) -> tuple[int, int, int, int] | None:
    """Follow ``box`` from frame ``start`` to frame ``stop`` (> start) of RGB ``frames``.

    ``search`` (template matching: how far, in pixels, the box may move between two frames;
    default a quarter of the frame side) and ``min_score`` (the correlation below which the
    track counts as lost). Returns the box at ``stop``, or None when the track is lost or
    leaves the frame.
    """
    if tracker not in TRACKERS:
        raise ValueError(f"unknown tracker {tracker!r}; choose one of {TRACKERS}")
    height, width = frames.shape[1:3]
    x, y, w, h = box
    if w < 4 or h < 4:
        return None
    if tracker == "template":
        search = search if search is not None else max(4, min(height, width) // 4)
        current = tuple(box)
        for t in range(start + 1, stop + 1):
            current = _template_step(frames[t - 1], frames[t], current, search, min_score)
            if current is None:
                return None
        return current
    engine = _opencv_tracker(tracker)
    engine.init(cv2.cvtColor(np.ascontiguousarray(frames[start]), cv2.COLOR_RGB2BGR), (x, y, w, h))
    current = None
    for t in range(start + 1, stop + 1):
        ok, found = engine.update(cv2.cvtColor(np.ascontiguousarray(frames[t]), cv2.COLOR_RGB2BGR))
        if not ok:
            return None
        current = tuple(int(round(v)) for v in found)
    cx, cy = current[0] + current[2] / 2, current[1] + current[3] / 2
    if not (0 <= cx < width and 0 <= cy < height):
        return None
    return current


def square_patch(box: tuple[int, int, int, int], frame_side: tuple[int, int], context: float = 1.25,
                 min_side: int = 16) -> tuple[float, float, float, float]:
    """A square (x1, y1, x2, y2) around ``box``, ``context`` times its longer side (at least
    ``min_side``), shifted to lie inside a frame of (height, width) when it can."""
    x, y, w, h = box
    height, width = frame_side
    side = min(max(min_side, context * max(w, h)), min(height, width))
    cx, cy = x + w / 2, y + h / 2
    x1 = min(max(cx - side / 2, 0.0), width - side)
    y1 = min(max(cy - side / 2, 0.0), height - side)
    return (x1, y1, x1 + side, y1 + side)


@dataclass
class TrackedPairs:
    """Mined pairs: for pair ``i``, clip ``clip[i]``, the query patch ``query[i]`` (x1, y1, x2,
    y2) in frame ``query_frame[i]`` and the tracked patch ``tracked[i]`` in ``tracked_frame[i]``."""

    clip: np.ndarray
    query_frame: np.ndarray
    query: np.ndarray
    tracked_frame: np.ndarray
    tracked: np.ndarray

    def __len__(self) -> int:
        return len(self.clip)


def mine_pairs(clips: np.ndarray, queries_per_clip: int = 2, boxes_per_frame: int = 2,
               track_frames: int = 8, gap: int = 2, tracker: str = "template",
               detector: str = "median", threshold: int = 15, min_area: int = 40,
               context: float = 1.25, progress=None) -> TrackedPairs:
    """Mine (query, tracked) patch pairs from RGB clips [N, T, H, W, 3].

    Query frames are spread evenly over the frames from which the track can run
    ``track_frames`` frames on (a shorter track when the clip is short); ``gap`` keeps them
    away from the clip's ends (frame differencing needs frames on both sides).
    """
    n, frames, height, width = clips.shape[:4]
    first, last = gap, frames - 1 - gap
    if last < first:
        raise ValueError(f"clips of {frames} frames are too short for a gap of {gap} frames")
    span = max(first, min(last, frames - 1 - track_frames))
    starts = sorted(set(np.linspace(first, span, queries_per_clip).round().astype(int).tolist()))
    rows: list[tuple] = []
    iterator = progress(range(n), desc="mine tracks", leave=False) if progress else range(n)
    for i in iterator:
        for t0 in starts:
            t1 = min(frames - 1, t0 + track_frames)
            if t1 <= t0:
                continue
            for box in moving_boxes(clips[i], t0, gap, threshold, min_area, boxes_per_frame, detector):
                found = track_box(clips[i], t0, box, t1, tracker)
                if found is None:
                    continue
                rows.append((i, t0, square_patch(box, (height, width), context), t1,
                             square_patch(found, (height, width), context)))
    if not rows:
        return TrackedPairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                            np.zeros(0, np.int64), np.zeros((0, 4), np.float32))
    clip, t0, q, t1, t = zip(*rows)
    return TrackedPairs(np.array(clip), np.array(t0), np.array(q, np.float32), np.array(t1),
                        np.array(t, np.float32))
