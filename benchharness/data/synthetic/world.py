"""The synthetic world: a deterministic stand-in for PASCAL VOC, ImageNet and an image pool.

``generate_world(out, seed, size)`` writes, under ``out``::

    VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main}        classification/detection
    VOCdevkit/VOC2012/{JPEGImages,Annotations,SegmentationClass,
                       ImageSets/Segmentation,ImageSets/Main}        segmentation
    benchmark_RELEASE/dataset/{img,cls,train.txt,val.txt}            SBD's layout (sbd.py)
    source/{train,val}/<class>/*.jpg                                 object-centric, labelled
    unlabelled/*.jpg                                                 scenes, no labels
    clips/clip_*.mkv, clips/manifest.json                            video with sound, true boxes
    selective_search_data/voc_2007_{trainval,test}.npz               Fast R-CNN's proposals
    world.json, .complete

Each of the 20 VOC classes has a fixed appearance (:data:`CLASS_STYLES`): a shape, a hue
distribution, a texture with its own orientation and frequency, a typical size and aspect.
Every instance jitters all of these, so the classes are learnable but not trivially so.
Scenes hold 1-4 objects on cluttered backgrounds with distractor blobs; objects occlude each
other (later ones in front), may be cut by the image border (``truncated``), and small or
mostly hidden objects are flagged ``difficult``.

Every image is drawn from its own ``numpy.random.Generator`` seeded by
``(seed, stream, index)``, so the output is byte-identical for a given seed and independent
of the order (or the number of processes) in which images are made. The clips
(:mod:`benchharness.data.synthetic.clips`) come from a stream of their own, so adding them changed
no image.
"""

from __future__ import annotations

import colorsys
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from ... import atomic
from ...interfaces import DataError
from ..voc.classes import IGNORE_LABEL, VOC_CLASSES, VOC_PALETTE
from .proposals import FOLDER as PROPOSALS_FOLDER

GENERATOR_VERSION = "1"
"""Bump when the output of a given seed changes; recorded in ``world.json``."""

JPEG_QUALITY = 90
SOURCE_SIDE = 64

# --------------------------------------------------------------------------------------
# Sizes


@dataclass(frozen=True)
class WorldSize:
    """How many images of each kind a world holds, and the range of scene sides (pixels)."""

    voc07_trainval: int
    voc07_test: int
    voc12_train: int
    voc12_val: int
    source_train_per_class: int
    source_val_per_class: int
    unlabelled: int
    scene_side: tuple[int, int] = (112, 160)


SIZES: dict[str, WorldSize] = {
    "tiny": WorldSize(40, 40, 20, 20, 4, 2, 20),
    "small": WorldSize(1000, 1000, 300, 300, 120, 20, 1000),
    "medium": WorldSize(3500, 3500, 1000, 1000, 400, 50, 3500),
}

# --------------------------------------------------------------------------------------
# Class appearance


@dataclass(frozen=True)
class ClassStyle:
    """How instances of one class look.

    ``hue`` in [0, 1) with Gaussian ``hue_jitter``; ``saturation`` / ``value`` are centres;
    ``texture`` one of solid, stripes, dots, checker, gradient, noise, drawn in
    ``second_hue`` / ``second_value`` at ``texture_angle`` degrees (relative to the object)
    with period ``texture_period`` (fraction of the object's size). ``size`` is the typical
    object side as a fraction of the scene's shorter side, ``aspect`` width / height,
    ``angle`` the typical rotation in degrees and ``angle_jitter`` its spread. ``motion``
    and ``sound`` are hints for video and audio generators.
    """

    name: str
    shape: str
    hue: float
    hue_jitter: float
    saturation: float
    value: float
    texture: str
    texture_angle: float
    texture_period: float
    second_hue: float
    second_value: float
    size: float
    aspect: float
    angle: float
    angle_jitter: float
    motion: str
    sound: str


def _style(name, shape, hue, texture, tex_angle, period, second_hue, second_value, size,
           aspect, angle=0.0, angle_jitter=12.0, saturation=0.75, value=0.8,
           hue_jitter=0.035, motion="still", sound="hum") -> ClassStyle:
    return ClassStyle(name, shape, hue, hue_jitter, saturation, value, texture, tex_angle,
                      period, second_hue, second_value, size, aspect, angle, angle_jitter,
                      motion, sound)


_STYLE_LIST = [
    #      name           shape        hue   texture    tex∠  period 2nd-h  2nd-v  size aspect
    _style("aeroplane",   "cross",     0.58, "gradient",  90, 1.00, 0.58, 0.35, 0.55, 1.6,
           motion="fast-linear", sound="roar"),
    _style("bicycle",     "ring",      0.00, "solid",      0, 1.00, 0.00, 0.50, 0.45, 1.3,
           angle_jitter=25, motion="linear", sound="bell"),
    _style("bird",        "triangle",  0.12, "stripes",   30, 0.30, 0.05, 0.30, 0.30, 1.2,
           angle_jitter=35, motion="flutter", sound="chirp"),
    _style("boat",        "crescent",  0.64, "stripes",    0, 0.25, 0.00, 0.95, 0.45, 1.8,
           saturation=0.85, motion="bob", sound="horn"),
    _style("bottle",      "box",       0.33, "gradient",   0, 1.00, 0.33, 0.30, 0.40, 0.35,
           saturation=0.65, motion="still", sound="clink"),
    _style("bus",         "box",       0.15, "stripes",    0, 0.20, 0.15, 0.25, 0.60, 1.9,
           angle_jitter=6, saturation=0.9, value=0.9, motion="linear", sound="engine"),
    _style("car",         "trapezoid", 0.97, "solid",      0, 1.00, 0.97, 0.40, 0.45, 1.7,
           angle=180, angle_jitter=8, motion="linear", sound="engine"),
    _style("cat",         "ellipse",   0.08, "stripes",   70, 0.22, 0.08, 0.25, 0.40, 1.3,
           saturation=0.55, motion="prowl", sound="meow"),
    _style("chair",       "lshape",    0.06, "checker",    0, 0.30, 0.06, 0.30, 0.45, 0.8,
           saturation=0.6, value=0.6, motion="still", sound="creak"),
    _style("cow",         "ellipse",   0.00, "dots",       0, 0.35, 0.00, 0.10, 0.55, 1.6,
           saturation=0.05, value=0.92, hue_jitter=0.1, motion="slow", sound="moo"),
    _style("diningtable", "tshape",    0.07, "stripes",    0, 0.12, 0.07, 0.45, 0.60, 1.6,
           saturation=0.7, value=0.55, angle_jitter=5, motion="still", sound="clatter"),
    _style("dog",         "ellipse",   0.10, "noise",      0, 0.15, 0.10, 0.35, 0.42, 1.4,
           saturation=0.6, value=0.65, motion="bounce", sound="bark"),
    _style("horse",       "hexagon",   0.05, "gradient",  45, 1.00, 0.05, 0.25, 0.55, 1.3,
           saturation=0.7, value=0.5, motion="gallop", sound="neigh"),
    _style("motorbike",   "ring",      0.75, "stripes",   90, 0.18, 0.75, 0.20, 0.45, 1.3,
           angle_jitter=25, motion="fast-linear", sound="rev"),
    _style("person",      "ellipse",   0.03, "solid",      0, 1.00, 0.55, 0.60, 0.55, 0.45,
           saturation=0.45, value=0.85, hue_jitter=0.02, angle_jitter=8, motion="walk",
           sound="speech"),
    _style("pottedplant", "star",      0.36, "noise",      0, 0.15, 0.30, 0.45, 0.45, 1.0,
           angle_jitter=36, motion="sway", sound="rustle"),
    _style("sheep",       "ellipse",   0.14, "dots",       0, 0.22, 0.14, 0.70, 0.45, 1.3,
           saturation=0.12, value=0.95, motion="slow", sound="baa"),
    _style("sofa",        "box",       0.92, "checker",   20, 0.25, 0.92, 0.45, 0.60, 1.8,
           saturation=0.55, value=0.65, motion="still", sound="thud"),
    _style("train",       "box",       0.50, "stripes",   90, 0.15, 0.50, 0.30, 0.70, 2.6,
           angle_jitter=5, motion="fast-linear", sound="whistle"),
    _style("tvmonitor",   "diamond",   0.66, "checker",   45, 0.20, 0.50, 0.85, 0.40, 1.2,
           saturation=0.5, value=0.35, angle_jitter=8, motion="flicker", sound="static"),
]

CLASS_STYLES: dict[str, ClassStyle] = {style.name: style for style in _STYLE_LIST}
"""Appearance (and motion / sound hints) of each VOC class, keyed by class name."""

assert tuple(CLASS_STYLES) == VOC_CLASSES

SHAPES = ("ellipse", "box", "triangle", "star", "cross", "ring", "diamond", "hexagon",
          "crescent", "trapezoid", "lshape", "tshape")

# --------------------------------------------------------------------------------------
# Drawing


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in the object's own frame, where the shape fills [-1, 1] x [-1, 1]."""
    au, av = np.abs(u), np.abs(v)
    if shape == "ellipse":
        return u * u + v * v <= 1.0
    if shape == "box":
        return (au <= 1.0) & (av <= 1.0)
    if shape == "diamond":
        return au + av <= 1.0
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.36)
    if shape == "crescent":
        return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + (v + 0.2) ** 2 >= 0.64)
    if shape == "triangle":
        return (v <= 1.0) & (v >= 2.0 * au - 1.0)
    if shape == "hexagon":
        return (av <= 0.866) & (0.866 * au + 0.5 * av <= 0.866)
    if shape == "star":
        theta = np.arctan2(v, u)
        return np.hypot(u, v) <= 0.6 + 0.4 * np.cos(5.0 * theta)
    if shape == "cross":
        return ((au <= 0.3) & (av <= 1.0)) | ((au <= 1.0) & (av <= 0.3))
    if shape == "trapezoid":
        body = (av <= 0.7) & (au <= 0.75 + 0.25 * v / 0.7)
        return body | ((au <= 0.45) & (v >= -1.0) & (v <= -0.6))
    if shape == "lshape":
        return ((u >= -1.0) & (u <= -0.35) & (av <= 1.0)) | ((au <= 1.0) & (v >= 0.35) & (v <= 1.0))
    if shape == "tshape":
        return ((au <= 1.0) & (v >= -1.0) & (v <= -0.55)) | ((au <= 0.22) & (av <= 1.0))
    raise ValueError(f"unknown shape {shape!r}")


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)),
                    dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bilinearly to [H, W]."""
    coarse = rng.random((cells + 1, cells + 1), dtype=np.float32)
    image = Image.fromarray(coarse, mode="F").resize((width, height), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Cluttered background: two low-saturation colours mixed by smooth noise, plus grain."""
    first = _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.85))
    second = _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.85))
    mix = _smooth_noise(rng, height, width, int(rng.integers(2, 7)))[..., None]
    image = first * mix + second * (1.0 - mix)
    detail = _smooth_noise(rng, height, width, int(rng.integers(8, 20)))[..., None] - 0.5
    image = image + 0.15 * detail
    return image.astype(np.float32)


@dataclass
class _Placed:
    """An object as drawn: class index (0-based) and its full (unclipped) pixel area."""

    cls: int
    full_area: int
    clipped_area: int


def _draw_object(
    rng: np.random.Generator,
    image: np.ndarray,
    ids: np.ndarray | None,
    object_id: int,
    style: ClassStyle,
    cx: float,
    cy: float,
    side: float,
) -> tuple[int, int]:
    """Paint one instance of ``style`` centred at (cx, cy); return (full area, clipped area).

    ``side`` is the object's typical extent in pixels; the aspect, rotation, colour and
    texture are jittered here. ``ids`` (if given) receives ``object_id`` on painted pixels.
    """
    height, width = image.shape[:2]
    aspect = style.aspect * math.exp(rng.normal(0.0, 0.15))
    half_w = 0.5 * side * math.sqrt(aspect)
    half_h = 0.5 * side / math.sqrt(aspect)
    angle = math.radians(style.angle + rng.normal(0.0, style.angle_jitter))
    if rng.random() < 0.5 and style.shape not in ("triangle", "trapezoid", "tshape"):
        angle += math.pi  # mirror-ish variation for symmetric-enough shapes
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    extent = math.hypot(half_w, half_h) + 1.0
    x0, x1 = int(math.floor(cx - extent)), int(math.ceil(cx + extent)) + 1
    y0, y1 = int(math.floor(cy - extent)), int(math.ceil(cy + extent)) + 1
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    u = (cos_a * dx + sin_a * dy) / half_w
    v = (-sin_a * dx + cos_a * dy) / half_h
    inside = _shape_mask(style.shape, u, v)
    full_area = int(inside.sum())

    # Clip the local window to the image.
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x1, width), min(y1, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return full_area, 0
    window = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    inside = inside[window]
    u, v = u[window], v[window]
    clipped_area = int(inside.sum())
    if clipped_area == 0:
        return full_area, 0

    hue = style.hue + rng.normal(0.0, style.hue_jitter)
    main = _hsv(hue, style.saturation + rng.normal(0.0, 0.08), style.value + rng.normal(0.0, 0.07))
    second = _hsv(style.second_hue + rng.normal(0.0, style.hue_jitter),
                  style.saturation + rng.normal(0.0, 0.08),
                  style.second_value + rng.normal(0.0, 0.07))

    # Texture coordinates in the object's frame, scaled to "object widths".
    tex_angle = math.radians(style.texture_angle + rng.normal(0.0, 8.0))
    period = style.texture_period * math.exp(rng.normal(0.0, 0.2))
    phase = rng.random()
    su = u * (half_w / side)
    sv = v * (half_h / side)
    along = math.cos(tex_angle) * su + math.sin(tex_angle) * sv
    across = -math.sin(tex_angle) * su + math.cos(tex_angle) * sv
    texture = style.texture
    if texture == "stripes":
        weight = (np.sin(2 * math.pi * (along / period + phase)) > 0).astype(np.float32)
    elif texture == "checker":
        weight = ((np.floor(along / period + phase) + np.floor(across / period + phase)) % 2)
        weight = weight.astype(np.float32)
    elif texture == "dots":
        fu = (along / period + phase) % 1.0 - 0.5
        fv = (across / period + phase) % 1.0 - 0.5
        weight = (fu * fu + fv * fv <= 0.09).astype(np.float32)
    elif texture == "gradient":
        weight = np.clip(0.5 + along * 1.2 + (phase - 0.5) * 0.3, 0.0, 1.0).astype(np.float32)
    elif texture == "noise":
        weight = rng.random(u.shape, dtype=np.float32)
        weight = (weight > 0.55).astype(np.float32)
    else:  # solid
        weight = np.zeros(u.shape, dtype=np.float32)
    colour = main * (1.0 - weight[..., None]) + second * weight[..., None]
    # A little shading so that objects are not flat.
    shade = 1.0 + 0.12 * (-(u * 0.4 + v * 0.6)).clip(-1.0, 1.0)
    colour = colour * shade[..., None]

    region = image[cy0:cy1, cx0:cx1]
    region[inside] = colour[inside]
    if ids is not None:
        ids[cy0:cy1, cx0:cx1][inside] = object_id
    return full_area, clipped_area


def _draw_distractors(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Blobs that belong to no class: wobbly shapes in random colours."""
    height, width = image.shape[:2]
    short = min(height, width)
    for _ in range(count):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.06, 0.2) * short
        x0, x1 = int(max(cx - 1.5 * radius, 0)), int(min(cx + 1.5 * radius + 1, width))
        y0, y1 = int(max(cy - 1.5 * radius, 0)), int(min(cy + 1.5 * radius + 1, height))
        if x1 <= x0 or y1 <= y0:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
        theta = np.arctan2(dy, dx)
        lobes = int(rng.integers(2, 5))
        wobble = 1.0 + 0.35 * np.sin(lobes * theta + rng.uniform(0, 2 * math.pi))
        inside = np.hypot(dx, dy) <= radius * wobble
        colour = _hsv(rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.2, 0.9))
        alpha = rng.uniform(0.5, 1.0)
        region = image[y0:y1, x0:x1]
        region[inside] = alpha * colour + (1.0 - alpha) * region[inside]


def _to_uint8(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    grain = rng.normal(0.0, 0.02, size=image.shape).astype(np.float32)
    return (np.clip(image + grain, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@dataclass
class SceneObject:
    """One annotated object of a generated scene; ``bbox`` 1-based inclusive pixels."""

    name: str
    bbox: tuple[int, int, int, int]
    difficult: bool
    truncated: bool


@dataclass
class Scene:
    """A generated scene: the RGB image, its annotated objects and its class mask."""

    image: np.ndarray  # uint8 [H, W, 3]
    objects: list[SceneObject]
    mask: np.ndarray  # uint8 [H, W]: 0 background, 1..20 classes, 255 void


_CLASS_WEIGHTS = np.array([3.0 if name == "person" else 1.0 for name in VOC_CLASSES])
_CLASS_WEIGHTS /= _CLASS_WEIGHTS.sum()


def make_scene(rng: np.random.Generator, side_range: tuple[int, int] = (112, 160)) -> Scene:
    """Draw one cluttered scene with 1-4 objects, their boxes, flags and class mask.

    As in VOC, every scene has at least one annotated object: a draw whose objects all fell
    (almost) outside the image is redrawn from the same generator.
    """
    for _ in range(20):
        scene = _draw_scene(rng, side_range)
        if scene.objects:
            return scene
    return scene


def _draw_scene(rng: np.random.Generator, side_range: tuple[int, int]) -> Scene:
    width = int(rng.integers(side_range[0], side_range[1] + 1))
    height = int(rng.integers(side_range[0], side_range[1] + 1))
    short = min(width, height)
    image = _background(rng, height, width)
    _draw_distractors(rng, image, int(rng.integers(1, 5)))
    ids = np.zeros((height, width), dtype=np.uint8)
    count = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.3, 0.2, 0.15]))
    placed: list[_Placed] = []
    for number in range(1, count + 1):
        cls = int(rng.choice(len(VOC_CLASSES), p=_CLASS_WEIGHTS))
        style = CLASS_STYLES[VOC_CLASSES[cls]]
        scale = math.exp(rng.normal(0.0, 0.3)) * (0.55 if rng.random() < 0.15 else 1.0)
        side = style.size * scale * short / (1.0 + 0.25 * (count - 1))
        side = max(side, 6.0)
        if rng.random() < 0.2:  # push towards a border: truncation
            cx = rng.choice([rng.uniform(-0.1, 0.12), rng.uniform(0.88, 1.1)]) * width
            cy = rng.uniform(0.1, 0.9) * height
        else:
            cx = rng.uniform(0.15, 0.85) * width
            cy = rng.uniform(0.15, 0.85) * height
        full, clipped = _draw_object(rng, image, ids, number, style, cx, cy, side)
        placed.append(_Placed(cls, full, clipped))

    class_of = np.zeros(256, dtype=np.uint8)
    objects: list[SceneObject] = []
    for number, item in enumerate(placed, start=1):
        visible = ids == number
        area = int(visible.sum())
        if area < 12:
            # Too little left to annotate: not an object of the ground truth, void in the mask.
            class_of[number] = IGNORE_LABEL
            continue
        class_of[number] = item.cls + 1
        rows = np.flatnonzero(visible.any(axis=1))
        cols = np.flatnonzero(visible.any(axis=0))
        bbox = (int(cols[0]) + 1, int(rows[0]) + 1, int(cols[-1]) + 1, int(rows[-1]) + 1)
        box_w, box_h = bbox[2] - bbox[0] + 1, bbox[3] - bbox[1] + 1
        truncated = item.clipped_area < 0.9 * item.full_area
        occluded_fraction = 1.0 - area / max(item.clipped_area, 1)
        difficult = min(box_w, box_h) < 10 or area < 100 or occluded_fraction > 0.7
        objects.append(SceneObject(VOC_CLASSES[item.cls], bbox, bool(difficult), bool(truncated)))

    mask = class_of[ids]
    # A void band ~2 px wide along every object's border (both sides of each edge).
    band = np.zeros_like(ids, dtype=bool)
    for axis in (0, 1):
        edge = np.diff(ids, axis=axis) != 0
        if axis == 0:
            band[1:, :] |= edge
            band[:-1, :] |= edge
        else:
            band[:, 1:] |= edge
            band[:, :-1] |= edge
    mask[band] = IGNORE_LABEL
    return Scene(_to_uint8(rng, image), objects, mask)


def make_object_image(rng: np.random.Generator, cls: int, side: int = SOURCE_SIDE) -> np.ndarray:
    """An object-centric image: one dominant instance of class ``cls`` on clutter."""
    image = _background(rng, side, side)
    _draw_distractors(rng, image, int(rng.integers(0, 3)))
    style = CLASS_STYLES[VOC_CLASSES[cls]]
    extent = side * rng.uniform(0.45, 0.85) * (style.size / 0.5) ** 0.3
    longest = extent * max(math.sqrt(style.aspect), 1.0 / math.sqrt(style.aspect))
    if longest > 0.95 * side:
        extent *= 0.95 * side / longest
    cx = side * (0.5 + rng.normal(0.0, 0.06))
    cy = side * (0.5 + rng.normal(0.0, 0.06))
    _draw_object(rng, image, None, 1, style, cx, cy, extent)
    if rng.random() < 0.3:  # a distractor in front: partial occlusion
        _draw_distractors(rng, image, 1)
    return _to_uint8(rng, image)


# --------------------------------------------------------------------------------------
# Writing


def _save_jpeg(array: np.ndarray, path: Path) -> None:
    # No EXIF/ICC/comment: PIL writes only what it is given. Fixed quality and subsampling.
    Image.fromarray(array, mode="RGB").save(path, "JPEG", quality=JPEG_QUALITY, subsampling=0,
                                            optimize=False)


def _save_mask(mask: np.ndarray, path: Path) -> None:
    image = Image.fromarray(mask, mode="L").convert("P")
    image.putpalette(VOC_PALETTE)
    image.save(path, "PNG", optimize=False)


def _annotation_xml(year: str, image_id: str, width: int, height: int,
                    objects: list[SceneObject], segmented: bool) -> str:
    lines = [
        "<annotation>",
        f"\t<folder>VOC{year}</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<source>",
        "\t\t<database>benchharness synthetic world</database>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{width}</width>",
        f"\t\t<height>{height}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        f"\t<segmented>{int(segmented)}</segmented>",
    ]
    for obj in objects:
        xmin, ymin, xmax, ymax = obj.bbox
        lines += [
            "\t<object>",
            f"\t\t<name>{escape(obj.name)}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(obj.truncated)}</truncated>",
            f"\t\t<difficult>{int(obj.difficult)}</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{xmin}</xmin>",
            f"\t\t\t<ymin>{ymin}</ymin>",
            f"\t\t\t<xmax>{xmax}</xmax>",
            f"\t\t\t<ymax>{ymax}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def image_labels(objects: Iterable[SceneObject]) -> dict[str, int]:
    """The VOC per-image rule: 1 if a non-difficult instance, 0 if only difficult, else -1."""
    labels = {name: -1 for name in VOC_CLASSES}
    for obj in objects:
        if not obj.difficult:
            labels[obj.name] = 1
        elif labels[obj.name] == -1:
            labels[obj.name] = 0
    return labels


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _write_main_sets(main: Path, splits: dict[str, list[str]],
                     labels: dict[str, dict[str, int]]) -> None:
    main.mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        _write_lines(main / f"{split}.txt", ids)
        for name in VOC_CLASSES:
            _write_lines(main / f"{name}_{split}.txt",
                         (f"{image_id} {labels[image_id][name]:2d}" for image_id in ids))


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def _identity(iterable, **_kwargs):
    return iterable


def _write_devkit_year(
    year_dir: Path,
    year: str,
    ids: list[str],
    seed: int,
    stream: int,
    side_range: tuple[int, int],
    segmented: bool,
    progress: Callable,
) -> dict[str, dict[str, int]]:
    jpeg_dir = year_dir / "JPEGImages"
    xml_dir = year_dir / "Annotations"
    jpeg_dir.mkdir(parents=True, exist_ok=True)
    xml_dir.mkdir(parents=True, exist_ok=True)
    mask_dir = year_dir / "SegmentationClass"
    if segmented:
        mask_dir.mkdir(parents=True, exist_ok=True)
    labels: dict[str, dict[str, int]] = {}
    for index, image_id in enumerate(progress(ids, desc=f"VOC{year}", total=len(ids))):
        scene = make_scene(_rng(seed, stream, index), side_range)
        height, width = scene.mask.shape
        _save_jpeg(scene.image, jpeg_dir / f"{image_id}.jpg")
        (xml_dir / f"{image_id}.xml").write_text(
            _annotation_xml(year, image_id, width, height, scene.objects, segmented),
            encoding="utf-8",
        )
        if segmented:
            _save_mask(scene.mask, mask_dir / f"{image_id}.png")
        labels[image_id] = image_labels(scene.objects)
    return labels


_STREAM_VOC07, _STREAM_VOC12, _STREAM_SOURCE, _STREAM_UNLABELLED, _STREAM_SPLITS = range(5)


def generate_world(out: Path | str, seed: int = 0, size: str = "small",
                   progress: Callable | None = None) -> Path:
    """Generate the synthetic world into ``out`` and return ``out``.

    Deterministic: the same ``seed`` and ``size`` give byte-identical files. A stale
    ``.complete`` marker is removed first and written again only at the very end, so an
    interrupted generation is recognisable (see :func:`world_is_complete`).
    """
    if size not in SIZES:
        raise ValueError(f"unknown world size {size!r}; choose one of {sorted(SIZES)}")
    spec = SIZES[size]
    progress = progress or _identity
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / ".complete"
    marker.unlink(missing_ok=True)
    leftovers = [name for name in ("VOCdevkit", "benchmark_RELEASE", "source", "unlabelled", "clips",
                                   "egomotion", PROPOSALS_FOLDER) if (out / name).exists()]
    if leftovers and not is_synthetic_world(out):
        raise DataError(
            out,
            f"holds {', '.join(leftovers)} but no synthetic-world world.json; refusing to "
            "overwrite what may be real data: choose an empty or new directory",
        )
    # Start from a clean slate so that files of an earlier, larger world cannot linger.
    for name in leftovers:
        shutil.rmtree(out / name)
    # world.json goes first (it marks the directory as ours); .complete goes last.
    write_world_info(out, _world_info(seed, size))
    side_range = spec.scene_side
    split_rng = _rng(seed, _STREAM_SPLITS, 0)

    # VOC2007: ids 000001.. shuffled between trainval and test, as in the real devkit.
    total07 = spec.voc07_trainval + spec.voc07_test
    ids07 = [f"{i:06d}" for i in range(1, total07 + 1)]
    order = split_rng.permutation(total07)
    trainval = sorted(ids07[i] for i in order[: spec.voc07_trainval])
    test = sorted(ids07[i] for i in order[spec.voc07_trainval:])
    half = split_rng.permutation(len(trainval))
    train = sorted(trainval[i] for i in half[: len(trainval) // 2])
    val = sorted(trainval[i] for i in half[len(trainval) // 2:])
    voc07 = out / "VOCdevkit" / "VOC2007"
    labels07 = _write_devkit_year(voc07, "2007", ids07, seed, _STREAM_VOC07, side_range,
                                  False, progress)
    _write_main_sets(voc07 / "ImageSets" / "Main",
                     {"train": train, "val": val, "trainval": trainval, "test": test}, labels07)

    # VOC2012 segmentation.
    total12 = spec.voc12_train + spec.voc12_val
    ids12 = [f"2012_{i:06d}" for i in range(1, total12 + 1)]
    order = split_rng.permutation(total12)
    train12 = sorted(ids12[i] for i in order[: spec.voc12_train])
    val12 = sorted(ids12[i] for i in order[spec.voc12_train:])
    voc12 = out / "VOCdevkit" / "VOC2012"
    labels12 = _write_devkit_year(voc12, "2012", ids12, seed, _STREAM_VOC12, side_range,
                                  True, progress)
    splits12 = {"train": train12, "val": val12, "trainval": sorted(ids12)}
    segmentation = voc12 / "ImageSets" / "Segmentation"
    segmentation.mkdir(parents=True, exist_ok=True)
    for split, ids in splits12.items():
        _write_lines(segmentation / f"{split}.txt", ids)
    _write_main_sets(voc12 / "ImageSets" / "Main", splits12, labels12)
    from .sbd import write_sbd

    write_sbd(out)  # SBD's layout from the VOC2012 images (FCN's segmentation setup)

    # Source: the labelled, object-centric ImageNet stand-in.
    jobs = []
    for split, per_class in (("train", spec.source_train_per_class),
                             ("val", spec.source_val_per_class)):
        for cls, name in enumerate(VOC_CLASSES):
            (out / "source" / split / name).mkdir(parents=True, exist_ok=True)
            jobs += [(split, cls, name, i) for i in range(per_class)]
    for number, (split, cls, name, i) in enumerate(
        progress(jobs, desc="source", total=len(jobs))
    ):
        array = make_object_image(_rng(seed, _STREAM_SOURCE, number), cls)
        _save_jpeg(array, out / "source" / split / name / f"{name}_{split}_{i:05d}.jpg")

    # Unlabelled pool of scenes.
    pool = out / "unlabelled"
    pool.mkdir(parents=True, exist_ok=True)
    for index in progress(range(spec.unlabelled), desc="unlabelled", total=spec.unlabelled):
        scene = make_scene(_rng(seed, _STREAM_UNLABELLED, index), side_range)
        _save_jpeg(scene.image, pool / f"u{index:06d}.jpg")

    # Video clips with sound, for the tracking and sound methods.
    from .clips import write_clips

    write_clips(out / "clips", seed, size, progress)

    # Camera-motion sequences with their true poses, for the egomotion method.
    from .egomotion import write_egomotion

    write_egomotion(out / "egomotion", seed, size, progress)

    # Fast R-CNN's precomputed selective search, for VOC2007's splits.
    from .proposals import write_proposals

    write_proposals(out, progress)

    marker.write_bytes(b"")
    return out


def _world_info(seed: int, size: str) -> dict:
    from .clips import CLIP_SIZES, clips_info
    from .egomotion import EGO_SIZES, egomotion_info

    spec = SIZES[size]
    return {
        # a world's format tag (this module's old path), not an import path: worlds already
        # generated carry it, so it stays when the module moves
        "generator": "benchharness.data.synth",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "counts": {
            "voc2007": {
                "train": spec.voc07_trainval // 2,
                "val": spec.voc07_trainval - spec.voc07_trainval // 2,
                "trainval": spec.voc07_trainval,
                "test": spec.voc07_test,
            },
            "voc2012_segmentation": {"train": spec.voc12_train, "val": spec.voc12_val},
            "source": {"train": spec.source_train_per_class * len(VOC_CLASSES),
                       "val": spec.source_val_per_class * len(VOC_CLASSES)},
            "unlabelled": spec.unlabelled,
            "clips": CLIP_SIZES[size].clips,
            "egomotion_sequences": EGO_SIZES[size].sequences,
        },
        "sizes": asdict(spec),
        "clips": clips_info(size),
        "egomotion": egomotion_info(size),
        "classes": list(VOC_CLASSES),
    }


def read_world_info(root: Path | str) -> dict | None:
    """The ``world.json`` of ``root`` when this generator wrote it; None otherwise (no file, an
    unreadable one, or another generator's)."""
    try:
        info = json.loads((Path(root) / "world.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("generator") == "benchharness.data.synth" else None


def write_world_info(root: Path | str, info: dict) -> None:
    """Replace ``root``'s ``world.json`` with ``info`` (atomically)."""
    atomic.write_bytes(Path(root) / "world.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())


def is_synthetic_world(root: Path | str) -> bool:
    """True when ``root`` holds a ``world.json`` written by this generator."""
    return read_world_info(root) is not None


def world_is_complete(out: Path | str) -> bool:
    """True when ``out`` holds a world whose generation ran to the end."""
    return (Path(out) / ".complete").is_file()
