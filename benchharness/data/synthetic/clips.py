"""The synthetic world's video clips with sound, for the video and audio pretraining methods.

``write_clips(out, seed, size)`` writes ``out/clip_NNNNNN.mkv`` (MPEG-4 video, 16-bit PCM mono
audio, see :func:`benchharness.data.loading.video.write_clip`) and, last, ``out/manifest.json`` with
each clip's class, its motion and sound, and the true box of every object in every frame.

A clip shows one main object of its class (classes in turn, so every class has the same number
of clips) and, in half of the clips, a smaller second object behind it, of the same class in
half of those (a same-class distractor), of another class otherwise, over a static cluttered
background with per-frame sensor grain. Objects move as their class's ``motion`` hint says
(:data:`MOTIONS`: fast or slow straight lines, fluttering, bobbing, bouncing, galloping,
walking, swaying, flickering in place, standing still), in whole pixels so that their texture
is the same in every frame. What a tracker must see through, so that two views of one object
are not simply the same pixels (:class:`Appearance`): every object that moves changes scale
over the clip (approaching or receding) and lighting (a brightness ramp on the object), and in
half of the clips a class-less foreground blob crosses the main object's path, occluding it
for a few frames. The soundtrack is the main object's class's ``sound``
(:mod:`benchharness.data.synthetic.sound`) over background noise.

Each clip is drawn from its own generator seeded by ``(seed, stream 5, clip index)``: the clips
are a pure function of the seed and leave the world's images untouched.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ... import atomic
from ...interfaces import DataError
from ..loading.video import write_clip
from ..voc.classes import VOC_CLASSES
from .sound import make_sound
from .world import (CLASS_STYLES, _background, _draw_distractors, _draw_object, _hsv, _identity, _rng,
                    _to_uint8, read_world_info, write_world_info)

STREAM_CLIPS = 5
"""The world's random stream for clips (0-4 are the images' and splits')."""

CLIPS_VERSION = "2"
"""Bump when the clips of a given seed change; ``manifest.json`` records it (``generator_version``)
and a world whose clips carry another (version 1 wrote none) gets them generated again.
2: scale and lighting changes, same-class second objects, occluders crossing the object."""

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ClipSize:
    """How many clips a world holds and their shape: frames of ``side`` x ``side`` pixels at
    ``fps``, with ``frames / fps`` seconds of sound at ``sample_rate``."""

    clips: int
    frames: int
    side: int
    fps: int
    sample_rate: int = 16_000

    @property
    def seconds(self) -> float:
        """The clips' duration (and their sound's)."""
        return self.frames / self.fps


CLIP_SIZES: dict[str, ClipSize] = {
    "tiny": ClipSize(20, 16, 96, 16),
    "small": ClipSize(320, 16, 96, 16),
    "medium": ClipSize(1000, 16, 96, 16),
}


@dataclass(frozen=True)
class MotionPath:
    """A motion over ``frames`` frames: centre offsets (pixels, from the start), rotation
    offsets (degrees) and brightness factors, one per frame."""

    dx: np.ndarray
    dy: np.ndarray
    turn: np.ndarray
    brightness: np.ndarray


def _heading(rng: np.random.Generator, spread: float = 20.0) -> tuple[float, float]:
    """A mostly horizontal unit direction, left or right."""
    angle = math.radians(rng.normal(0.0, spread)) + (math.pi if rng.random() < 0.5 else 0.0)
    return math.cos(angle), math.sin(angle)


def motion_path(motion: str, rng: np.random.Generator, frames: int, side: int) -> MotionPath:
    """The class-dependent motion ``motion`` (a :data:`MOTIONS` name) over ``frames`` frames of a
    ``side``-pixel clip. Speeds are fractions of the side per frame, jittered per clip."""
    t = np.arange(frames, dtype=np.float64)
    zero = np.zeros(frames)
    speed_jitter = math.exp(rng.normal(0.0, 0.15))
    phase = rng.uniform(0.0, 2 * math.pi)
    dx, dy, turn, bright = zero.copy(), zero.copy(), zero.copy(), np.ones(frames)

    def linear(speed):
        hx, hy = _heading(rng)
        return hx * speed * speed_jitter * side * t, hy * speed * speed_jitter * side * t

    if motion == "fast-linear":
        dx, dy = linear(0.035)
    elif motion == "linear":
        dx, dy = linear(0.018)
    elif motion == "slow":
        dx, dy = linear(0.007)
    elif motion == "prowl":  # stop and go
        hx, hy = _heading(rng, 10.0)
        step = 0.02 * speed_jitter * side * (np.sin(2 * math.pi * t / 6.0 + phase) > 0)
        dx, dy = hx * np.cumsum(step), hy * np.cumsum(step)
    elif motion == "flutter":  # erratic drift with wobble
        hx, hy = _heading(rng, 40.0)
        dx = hx * 0.01 * side * t + np.cumsum(rng.normal(0.0, 0.02 * side, frames))
        dy = hy * 0.01 * side * t + np.cumsum(rng.normal(0.0, 0.02 * side, frames))
        turn = rng.normal(0.0, 8.0, frames)
    elif motion == "bob":  # floating: slow drift, vertical sway, rocking
        hx, _ = _heading(rng, 0.0)
        dx = hx * 0.004 * side * t
        dy = 0.05 * side * np.sin(2 * math.pi * t / 10.0 + phase)
        turn = 6.0 * np.sin(2 * math.pi * t / 10.0 + phase + 1.0)
    elif motion == "bounce":  # hops
        hx, _ = _heading(rng, 0.0)
        dx = hx * 0.015 * speed_jitter * side * t
        dy = -0.09 * side * np.abs(np.sin(math.pi * t / 6.0 + phase))
    elif motion == "gallop":
        hx, _ = _heading(rng, 0.0)
        dx = hx * 0.028 * speed_jitter * side * t
        dy = 0.03 * side * np.sin(2 * math.pi * t / 4.0 + phase)
    elif motion == "walk":
        hx, _ = _heading(rng, 0.0)
        dx = hx * 0.012 * speed_jitter * side * t
        dy = 0.012 * side * np.abs(np.sin(2 * math.pi * t / 6.0 + phase))
    elif motion == "sway":  # rooted, rocking
        turn = 15.0 * np.sin(2 * math.pi * t / 12.0 + phase)
        dx = 0.02 * side * np.sin(2 * math.pi * t / 12.0 + phase)
    elif motion == "flicker":  # in place, brightness changes
        bright = 1.0 + rng.uniform(-0.3, 0.3, frames)
    elif motion != "still":
        raise ValueError(f"unknown motion {motion!r}; known: {MOTIONS}")
    return MotionPath(dx - dx[0], dy - dy[0], turn, bright)


MOTIONS = ("fast-linear", "linear", "slow", "prowl", "flutter", "bob", "bounce", "gallop", "walk",
           "sway", "flicker", "still")
"""Motion names :func:`motion_path` knows (the classes' ``motion`` hints)."""


def _start(rng: np.random.Generator, offsets: np.ndarray, side: int) -> float:
    """A start coordinate keeping the whole path within [0.2, 0.8] x side when it fits."""
    lo, hi = 0.2 * side - offsets.min(), 0.8 * side - offsets.max()
    return rng.uniform(lo, hi) if hi > lo else 0.5 * side - 0.5 * (offsets.min() + offsets.max())


@dataclass
class Appearance:
    """How much an object's look drifts over a clip: it ends ``scale`` times as large and
    ``lighting`` times as bright as it starts (geometric ramps in between); still objects keep 1."""

    scale: float
    lighting: float

    def ramps(self, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame scale and brightness factors, 1 at the first frame."""
        t = np.linspace(0.0, 1.0, frames)
        return self.scale ** t, self.lighting ** t


SCALE_CHANGE = 0.3
"""An object's scale over a clip changes by a factor exp(U(-0.3, 0.3)) (0.74 to 1.35)."""
LIGHTING_CHANGE = 0.2
"""Its brightness by exp(N(0, 0.2)), clipped to [0.7, 1.4]."""


@dataclass
class _Actor:
    cls: int
    instance_seed: int
    extent: np.ndarray
    x: np.ndarray
    y: np.ndarray
    path: MotionPath
    appearance: Appearance


def _actor(rng: np.random.Generator, cls: int, frames: int, side: int, scale: float) -> _Actor:
    style = CLASS_STYLES[VOC_CLASSES[cls]]
    extent = max(8.0, style.size * 0.6 * scale * side * math.exp(rng.normal(0.0, 0.15)))
    path = motion_path(style.motion, rng, frames, side)
    x0, y0 = _start(rng, path.dx, side), _start(rng, path.dy, side)
    # whole-pixel positions (+ 0.5): the drawing window, and so the texture, is the same each frame
    x = np.floor(x0 + path.dx) + 0.5
    y = np.floor(y0 + path.dy) + 0.5
    instance_seed = int(rng.integers(2**63 - 1))
    drift = Appearance(math.exp(rng.uniform(-SCALE_CHANGE, SCALE_CHANGE)),
                       float(np.clip(math.exp(rng.normal(0.0, LIGHTING_CHANGE)), 0.7, 1.4)))
    if style.motion == "still":  # a still object stays exactly the same: nothing to track
        drift = Appearance(1.0, 1.0)
    grow, light = drift.ramps(frames)
    path = replace(path, brightness=path.brightness * light)
    return _Actor(cls, instance_seed, extent * grow, x, y, path, drift)


@dataclass
class Occluder:
    """A class-less foreground blob crossing the main object: its centre per frame, radius,
    lobes (its wobbly outline) and RGB colour in [0, 1]."""

    x: np.ndarray
    y: np.ndarray
    radius: float
    lobes: int
    phase: float
    colour: np.ndarray


def _occluder(rng: np.random.Generator, target: _Actor, frames: int, side: int) -> Occluder:
    """A blob that passes over ``target``'s centre at a frame of the clip's middle half, moving
    on a straight line fast enough to cover it for a few frames only."""
    meet = int(rng.integers(frames // 4, max(frames // 4 + 1, 3 * frames // 4)))
    angle = rng.uniform(0.0, 2 * math.pi)
    speed = rng.uniform(0.08, 0.12) * side
    t = np.arange(frames) - meet
    x = target.x[meet] + math.cos(angle) * speed * t
    y = target.y[meet] + math.sin(angle) * speed * t
    hue, saturation, value = rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.2, 0.9)
    return Occluder(x, y, rng.uniform(0.3, 0.5) * float(target.extent[meet]), int(rng.integers(2, 5)),
                    rng.uniform(0, 2 * math.pi), _hsv(hue, saturation, value))


def _draw_occluder(image: np.ndarray, ids: np.ndarray, number: int, occ: Occluder, f: int) -> None:
    """Paint the occluder at frame ``f`` (opaque), marking its pixels ``number`` in ``ids``."""
    side_y, side_x = image.shape[:2]
    cx, cy, r = float(occ.x[f]), float(occ.y[f]), occ.radius * 1.35
    x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, side_x)
    y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, side_y)
    if x1 <= x0 or y1 <= y0:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    inside = np.hypot(dx, dy) <= occ.radius * (1.0 + 0.35 * np.sin(occ.lobes * np.arctan2(dy, dx) + occ.phase))
    image[y0:y1, x0:x1][inside] = occ.colour
    ids[y0:y1, x0:x1][inside] = number


def _box(mask: np.ndarray) -> list[int] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]) + 1, int(rows[0]) + 1, int(cols[-1]) + 1, int(rows[-1]) + 1]


@dataclass
class SynthClip:
    """One generated clip: frames uint8 [T, S, S, 3], mono audio float32, and its facts.

    ``boxes[k]`` is the visible box of actor ``k`` in every frame (VOC convention: 1-based
    inclusive pixels, None where it is out of the frame); actor 0 is the main object, whose
    class the clip has and whose sound it plays.
    """

    frames: np.ndarray
    audio: np.ndarray
    classes: list[str]
    boxes: list[list[list[int] | None]]
    appearance: list[Appearance]
    occluder_boxes: list[list[int] | None] | None
    """The occluder's box in every frame (None where out of the frame); None: the clip has none."""
    hidden: list[float]
    """Per frame, the share of the main object's pixels the occluder hides (0 without one)."""

    @property
    def occluded_frames(self) -> list[int]:
        """The frames in which the occluder hides part of the main object."""
        return [f for f, share in enumerate(self.hidden) if share > 0]

    @property
    def label(self) -> str:
        """The clip's class: its main object's."""
        return self.classes[0]


def make_clip(rng: np.random.Generator, cls: int, size: ClipSize, occlude: bool = True) -> SynthClip:
    """Draw one clip whose main object has class index ``cls``. ``occlude`` False leaves the
    occluder out of the picture (and ``occluder_boxes`` None) but draws the same random numbers,
    so the clip is otherwise the same: the unoccluded render."""
    side, frames = size.side, size.frames
    background = _background(rng, side, side)
    _draw_distractors(rng, background, int(rng.integers(1, 4)))
    actors = []
    if rng.random() < 0.5:  # a second, smaller object behind the main one: same class or another
        same = rng.random() < 0.5
        other = cls if same else int((cls + rng.integers(1, len(VOC_CLASSES))) % len(VOC_CLASSES))
        actors.append(_actor(rng, other, frames, side, 0.7))
    actors.append(_actor(rng, cls, frames, side, 1.0))
    actors = actors[::-1]  # main first in the lists; drawn last (in front)
    grain_seed = int(rng.integers(2**63 - 1))
    audio = make_sound(rng, CLASS_STYLES[VOC_CLASSES[cls]].sound, size.seconds, size.sample_rate)
    occluder = _occluder(rng, actors[0], frames, side) if rng.random() < 0.5 else None
    if not occlude:
        occluder = None
    video = np.empty((frames, side, side, 3), np.uint8)
    boxes: list[list] = [[] for _ in actors]
    occluder_boxes: list = []
    hidden: list[float] = []
    grain = np.random.default_rng(grain_seed)
    for f in range(frames):
        image = background.copy()
        ids = np.zeros((side, side), np.uint8)
        for number in range(len(actors), 0, -1):  # back to front
            actor = actors[number - 1]
            style = CLASS_STYLES[VOC_CLASSES[actor.cls]]
            style = replace(style, angle=style.angle + float(actor.path.turn[f]),
                            value=style.value * float(actor.path.brightness[f]),
                            second_value=style.second_value * float(actor.path.brightness[f]))
            _draw_object(np.random.default_rng(actor.instance_seed), image, ids, number, style,
                         float(actor.x[f]), float(actor.y[f]), float(actor.extent[f]))
        main = int((ids == 1).sum())
        if occluder is not None:  # in front of everything
            _draw_occluder(image, ids, len(actors) + 1, occluder, f)
            occluder_boxes.append(_box(ids == len(actors) + 1))
        hidden.append(1.0 - int((ids == 1).sum()) / main if main else 0.0)
        for number in range(1, len(actors) + 1):
            boxes[number - 1].append(_box(ids == number))
        video[f] = _to_uint8(grain, image)
    return SynthClip(video, audio, [VOC_CLASSES[a.cls] for a in actors], boxes,
                     [a.appearance for a in actors], occluder_boxes if occluder is not None else None, hidden)


def write_clips(out: Path | str, seed: int, size: str | ClipSize,
                progress: Callable | None = None) -> Path:
    """Write the clips of a world of ``size`` into ``out`` (emptied first); manifest last."""
    spec = CLIP_SIZES[size] if isinstance(size, str) else size
    progress = progress or _identity
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    for stale in out.glob("clip_*.mkv"):
        stale.unlink()
    records = []
    for index in progress(range(spec.clips), desc="clips", total=spec.clips):
        clip = make_clip(_rng(seed, STREAM_CLIPS, index), index % len(VOC_CLASSES), spec)
        name = f"clip_{index:06d}.mkv"
        write_clip(out / name, clip.frames, clip.audio, spec.fps, spec.sample_rate)
        style = CLASS_STYLES[clip.label]
        records.append({"file": name, "class": clip.label, "motion": style.motion, "sound": style.sound,
                        "objects": [{"class": c, "boxes": b, "scale_change": round(a.scale, 4),
                                     "lighting_change": round(a.lighting, 4)}
                                    for c, b, a in zip(clip.classes, clip.boxes, clip.appearance)],
                        "same_class_distractor": len(clip.classes) > 1 and clip.classes[1] == clip.label,
                        "occluder": None if clip.occluder_boxes is None else {
                            "boxes": clip.occluder_boxes,
                            "hidden_share": [round(h, 4) for h in clip.hidden]}})
    # the manifest's format tag, as world.json's (see world._world_info), not an import path
    manifest = {"generator": "benchharness.data.synth_clips", "generator_version": CLIPS_VERSION,
                "seed": seed, **asdict(spec),
                "box_convention": "VOC: 1-based inclusive pixels [xmin, ymin, xmax, ymax]; "
                                  "null where the object is out of the frame; objects[0] is the "
                                  "main object, whose class is the clip's and whose sound it plays; "
                                  "boxes are the visible parts (an occluder in front cuts them)",
                "clips": records}
    atomic.write_bytes(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return out


def read_manifest(clips_dir: Path | str) -> dict:
    """The manifest of a synthetic clip folder."""
    path = Path(clips_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "no clip manifest (not a synthetic world's clip folder, or its "
                              "generation was interrupted)") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc})") from None


def clips_info(size: str) -> dict:
    """What ``world.json`` records about a world's clips (their :data:`CLIPS_VERSION` too)."""
    return {**asdict(CLIP_SIZES[size]), "version": CLIPS_VERSION}


def clips_are_current(clips_dir: Path | str) -> bool:
    """True when a clip folder's manifest carries this generator's :data:`CLIPS_VERSION`."""
    try:
        return read_manifest(clips_dir).get("generator_version", "1") == CLIPS_VERSION
    except DataError:
        return False


def ensure_clips(root: Path | str, progress: Callable | None = None) -> bool:
    """Add the clips to a complete synthetic world made before worlds had them, or made by an
    older clip generator (another :data:`CLIPS_VERSION`; the images are left as they are).

    Returns True when clips were generated (with the world's own seed and size, so the result
    is the same as a fresh ``generate_world``); a real data root, an incomplete world or one
    that has current clips is left alone.
    """
    root = Path(root)
    if not (root / ".complete").is_file() or clips_are_current(root / "clips"):
        return False
    info = read_world_info(root)
    size = info.get("size") if info else None
    if size not in CLIP_SIZES:
        return False
    write_clips(root / "clips", int(info.get("seed", 0)), size, progress)
    info.setdefault("counts", {})["clips"] = CLIP_SIZES[size].clips
    info["clips"] = clips_info(size)
    write_world_info(root, info)
    return True
