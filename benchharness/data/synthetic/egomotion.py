"""The synthetic world's camera-motion sequences, for methods that learn from egomotion.

``write_egomotion(out, seed, size)`` writes one folder per sequence, ``out/seq_NNNNNN/``, holding
its frames ``frame_0000.png``, ``frame_0001.png``, ... and ``poses.csv``, the camera's true pose
at every frame (:func:`write_sequence`), then ``out/manifest.json`` last (the sizes and the
pose convention).

``poses.csv`` has the header ``frame,tx,ty,rz`` and one row per frame: the frame's file name,
the camera's position ``(tx, ty)`` in a fixed world frame (here: pixels of the frame, x to the
right, y down) and its heading ``rz`` (degrees). Pose ``(tx, ty, rz)`` means the frame's pixel
at offset ``d`` from the frame's centre shows the world point ``t + R(rz) d``, with
``R(a) = [[cos a, -sin a], [sin a, cos a]]``. It is the format a user's own sequences take
(KITTI odometry's poses reduced to the ground plane fit it: ``tx = x``, ``ty = z``,
``rz`` = the rotation about y).

A sequence is one static scene (2 x 2 world scenes, :func:`~benchharness.data.synthetic.world.make_scene`,
each ``scene / 2`` pixels square, so that objects have the world images' scale) seen by a camera
``side`` pixels wide that makes an independent move at every frame, in its own frame (up to
``step`` pixels along each axis and ``turn`` degrees). Frames are rendered by an affine
warp of the scene (bilinear, reflected at the scene's border) plus sensor grain. Each sequence
is drawn from its own generator seeded by ``(seed, stream 7, index)``: a pure function of the
seed that leaves the rest of the world untouched (a separate part: worlds made before it get it
added by :func:`ensure_egomotion`, nothing else changes).
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from ... import atomic
from .world import _identity, _rng, make_scene, read_world_info, write_world_info

STREAM_EGOMOTION = 7
"""The world's random stream for camera-motion sequences (5 is the clips', 6 is unused)."""

MANIFEST = "manifest.json"
POSES = "poses.csv"
POSE_COLUMNS = ("frame", "tx", "ty", "rz")


@dataclass(frozen=True)
class EgoSize:
    """How many sequences a world holds, their frames, the frames' side, the scene's side and
    the largest mean motion per frame (``step`` pixels along each axis, ``turn`` degrees)."""

    sequences: int
    frames: int
    side: int = 96
    scene: int = 320
    step: float = 8.0
    turn: float = 5.0


EGO_SIZES: dict[str, EgoSize] = {
    "tiny": EgoSize(12, 8),
    "small": EgoSize(120, 10),
    "medium": EgoSize(400, 10),
}


def rotation(degrees: float) -> np.ndarray:
    """``R(a) = [[cos a, -sin a], [sin a, cos a]]`` for ``a`` in degrees."""
    a = math.radians(degrees)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def render_view(scene: np.ndarray, pose: np.ndarray, side: int) -> np.ndarray:
    """The ``side`` x ``side`` view of ``scene`` (uint8 [H, W, 3]) from camera pose
    ``(tx, ty, rz)`` relative to the scene's centre (see the module docstring)."""
    r = rotation(float(pose[2]))
    frame_centre = np.full(2, (side - 1) / 2)
    scene_centre = np.array([(scene.shape[1] - 1) / 2, (scene.shape[0] - 1) / 2])
    # frame pixel p -> scene point R (p - c_f) + c_s + t
    matrix = np.hstack([r, (scene_centre + pose[:2] - r @ frame_centre)[:, None]])
    return cv2.warpAffine(scene, matrix, (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)


def camera_path(rng: np.random.Generator, spec: EgoSize) -> np.ndarray:
    """Poses [T, 3] (tx, ty, rz) of a camera starting at the scene's centre (random heading)
    that makes an independent move at every frame, in its own frame: up to ``step`` pixels along
    each axis and ``turn`` degrees (independent, so that a scene does not tell its motion)."""
    poses = np.zeros((spec.frames, 3))
    poses[0, 2] = rng.uniform(-180.0, 180.0)
    for k in range(1, spec.frames):
        move = rng.uniform(-spec.step, spec.step, 2)
        poses[k, :2] = poses[k - 1, :2] + rotation(poses[k - 1, 2]) @ move
        poses[k, 2] = poses[k - 1, 2] + rng.uniform(-spec.turn, spec.turn)
    return poses


def make_sequence(rng: np.random.Generator, spec: EgoSize) -> tuple[np.ndarray, np.ndarray]:
    """One sequence: frames uint8 [T, side, side, 3] and the camera's true poses [T, 3]."""
    half = spec.scene // 2
    tiles = [make_scene(rng, (half, half)).image for _ in range(4)]
    scene = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
    poses = camera_path(rng, spec)
    grain = np.random.default_rng(int(rng.integers(2**63 - 1)))
    frames = np.empty((spec.frames, spec.side, spec.side, 3), np.uint8)
    for k, pose in enumerate(poses):
        view = render_view(scene, pose, spec.side).astype(np.float32)
        frames[k] = np.clip(view + grain.normal(0.0, 3.0, view.shape), 0, 255).round().astype(np.uint8)
    return frames, poses


def write_sequence(folder: Path | str, frames: np.ndarray, poses: np.ndarray) -> Path:
    """Write frames uint8 [T, H, W, 3] as ``frame_NNNN.png`` and their poses [T, 3] as
    ``poses.csv`` (header ``frame,tx,ty,rz``) into ``folder``; poses last."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if len(frames) != len(poses):
        raise ValueError(f"{len(frames)} frames but {len(poses)} poses")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(POSE_COLUMNS)
    for k, (frame, pose) in enumerate(zip(frames, poses)):
        name = f"frame_{k:04d}.png"
        Image.fromarray(frame).save(folder / name)
        writer.writerow([name, *(repr(float(v)) for v in pose)])
    atomic.write_bytes(folder / POSES, text.getvalue().encode())
    return folder


def write_egomotion(out: Path | str, seed: int, size: str | EgoSize,
                    progress: Callable | None = None) -> Path:
    """Write the camera-motion sequences of a world of ``size`` into ``out`` (emptied first);
    the manifest last."""
    spec = EGO_SIZES[size] if isinstance(size, str) else size
    progress = progress or _identity
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for index in progress(range(spec.sequences), desc="egomotion", total=spec.sequences):
        frames, poses = make_sequence(_rng(seed, STREAM_EGOMOTION, index), spec)
        write_sequence(out / f"seq_{index:06d}", frames, poses)
    manifest = {"generator": "benchharness.data.synth_egomotion", "seed": seed, **asdict(spec),
                "pose_convention": "poses.csv per sequence: frame,tx,ty,rz; the frame's pixel at "
                                   "offset d from its centre shows world point t + R(rz) d "
                                   "(pixels, x right, y down; rz in degrees)"}
    atomic.write_bytes(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return out


def egomotion_info(size: str) -> dict:
    """What ``world.json`` records about a world's camera-motion sequences."""
    return asdict(EGO_SIZES[size])


def ensure_egomotion(root: Path | str, progress: Callable | None = None) -> bool:
    """Add the camera-motion sequences to a complete synthetic world made before worlds had
    them. Returns True when they were generated (with the world's own seed and size, the same
    as a fresh world's); a real data root, an incomplete world or one that has them is left
    alone."""
    root = Path(root)
    if not (root / ".complete").is_file() or (root / "egomotion" / MANIFEST).is_file():
        return False
    info = read_world_info(root)
    size = info.get("size") if info else None
    if size not in EGO_SIZES:
        return False
    write_egomotion(root / "egomotion", int(info.get("seed", 0)), size, progress)
    info.setdefault("counts", {})["egomotion_sequences"] = EGO_SIZES[size].sequences
    info["egomotion"] = egomotion_info(size)
    write_world_info(root, info)
    return True
