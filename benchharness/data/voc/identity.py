"""What data a run used: the resolved data root, its VOC layout and a fingerprint of its split
files, recorded in every result and hashed into job keys, so that results (and caches) of
different data are never taken for one another.

The fingerprint hashes every ``VOC<year>/ImageSets/**/*.txt`` file of the devkit (names and
bytes): the splits and their per-class labels, a few megabytes at most, never the images.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ...interfaces import DataError
from .devkit import find_devkit


def split_fingerprint(devkit: Path | str, years: tuple[str, ...] | None = None) -> str:
    """SHA-256 (16 hex digits) over the relative paths and bytes of every split file
    (``VOC<year>/ImageSets/**/*.txt``) of ``devkit``, for ``years`` (default: those present)."""
    devkit = Path(devkit)
    h = hashlib.sha256()
    year_dirs = ([devkit / f"VOC{y}" for y in years] if years is not None
                 else sorted(p for p in devkit.glob("VOC*") if p.is_dir()))
    for year_dir in year_dirs:
        for path in sorted((year_dir / "ImageSets").rglob("*.txt")):
            h.update(path.relative_to(devkit).as_posix().encode() + b"\0")
            h.update(path.read_bytes())
            h.update(b"\0")
    return h.hexdigest()[:16]


def synthetic_recipe(data_root: Path | str) -> str | None:
    """``synthetic:<hash of seed, size, generator and clips versions>`` for a generated world (its ``world.json``),
    else None: two copies of one recipe are the same data wherever they lie."""
    world = Path(data_root) / "world.json"
    if not world.is_file():
        return None
    try:
        recipe = json.loads(world.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(recipe, dict):
        return None
    clips = recipe.get("clips")
    clips_version = clips.get("version", "1") if isinstance(clips, dict) else None
    # the generator's and the clips' versions: a world whose images or clips changed is other data
    blob = json.dumps({"seed": recipe.get("seed"), "size": recipe.get("size"),
                       "version": recipe.get("generator_version"), "clips_version": clips_version},
                      sort_keys=True, separators=(",", ":")).encode()
    return "synthetic:" + hashlib.sha256(blob).hexdigest()[:12]


@dataclass(frozen=True)
class DataIdentity:
    """The identity of a data root: ``root`` and ``devkit`` resolved, the VOC ``layout`` found,
    the ``splits`` fingerprint, and the synthetic recipe when it is a generated world
    (``devkit``, ``layout`` and ``splits`` are empty when the root holds no VOC)."""

    root: str
    devkit: str
    layout: str
    splits: str
    synthetic: str | None = None

    @property
    def key(self) -> str:
        """What makes two data roots the same data: the synthetic recipe (or else the resolved
        devkit path) and the split fingerprint; 12 hex digits."""
        blob = json.dumps([self.synthetic or self.devkit or self.root, self.splits]).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def tag(self) -> str:
        """A short label for tables: the root's folder name and the key's first 6 digits."""
        return f"{Path(self.root).name or self.root}:{self.key[:6]}"

    def record(self) -> dict:
        """The form stored in every result (``data``): the fields plus ``key`` and ``tag``."""
        return {**asdict(self), "key": self.key, "tag": self.tag}


def identify(data_root: Path | str) -> DataIdentity:
    """The :class:`DataIdentity` of ``data_root``; only reads. A root without VOC gets empty
    devkit, layout and splits (the tasks that need VOC say so themselves)."""
    root = Path(data_root)
    try:
        found = find_devkit(root)
    except DataError:  # no VOC: a task that needs it raises its own clear error
        return DataIdentity(str(root.resolve()), "", "", "", synthetic_recipe(root))
    return DataIdentity(str(root.resolve()), str(found.devkit.resolve()), found.layout,
                        split_fingerprint(found.devkit, found.years), synthetic_recipe(root))
