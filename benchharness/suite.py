"""Suite files (TOML) and the grid of jobs they describe.

A suite names a backbone, the methods, the tasks and their protocols, the number of seeds, the
data root, and per-method (``[methods.NAME]``) and per-task (``[tasks.NAME]``, with optional
``[tasks.NAME.PROTOCOL]`` overrides) settings; a ``[methods.NAME]`` section with ``base``
declares a variant of another method (:mod:`benchharness.variants`). ``seeds`` in a task's
section (or a protocol's table) replaces the suite's for that task (protocol): the smoke suite
runs detection, segmentation and the ``all`` protocol on one seed. See
``benchmarks/smoke.toml``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .executors import check_executor
from .interfaces import BenchharnessError
from .variants import ResolvedMethod, declared_bases, resolve

SCHEDULE_KEYS = frozenset({"epochs", "iterations", "steps", "warmup_epochs", "stepsize"})
"""The settings that count iterations or epochs (``stepsize``: Caffe's learning-rate step
interval, in iterations). ``run --schedule-fraction F`` multiplies them by F. ``lr_steps``
(how many times the learning rate is divided) is a count of divisions, not of iterations, and
is not among them."""

SUITE_DIRS = (Path.cwd() / "benchmarks", Path(__file__).resolve().parent.parent / "benchmarks")


def config_hash(obj: Any, length: int = 12) -> str:
    """A short, stable hash of a JSON-able configuration."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def check_schedule_fraction(fraction: float) -> float:
    """``fraction`` as a float, or a BenchharnessError when it is not in (0, 1]."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise BenchharnessError(f"schedule fraction must be a number in (0, 1], got {fraction!r}") from None
    if not 0 < value <= 1:
        raise BenchharnessError(f"schedule fraction must be in (0, 1], got {fraction!r}")
    return value


def scale_count(value: Any, fraction: float) -> Any:
    """One schedule count times ``fraction``, rounded, at least 1. Zero (a setting's "off" or
    "default") and anything that is not a positive int or float stay as they are."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return value
    scaled = max(1, round(value * fraction))
    return scaled if isinstance(value, int) else float(scaled)


def scale_schedule(section: Any, fraction: float) -> Any:
    """A copy of a suite section with every :data:`SCHEDULE_KEYS` value multiplied by
    ``fraction`` (see :func:`scale_count`), in nested tables too (``[tasks.T.PROTOCOL]``)."""
    if not isinstance(section, dict):
        return section
    out = {}
    for key, value in section.items():
        if isinstance(value, dict):
            out[key] = scale_schedule(value, fraction)
        elif key in SCHEDULE_KEYS and fraction != 1:
            out[key] = scale_count(value, fraction)
        else:
            out[key] = value
    return out


def file_digest(path: Path, length: int = 16) -> str:
    """SHA-256 of a file's bytes (so a changed checkpoint is a different configuration)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


@dataclass
class Suite:
    """A parsed suite file."""

    name: str
    path: Path | None
    backbone: str
    methods: list[str]
    tasks: dict[str, list[str]]  # task -> protocols
    seeds: int = 1
    data_root: str | None = None
    synthetic: dict[str, Any] | None = None  # {"seed": int, "size": str} when the default world is used
    method_config: dict[str, dict] = field(default_factory=dict)  # [methods.NAME] sections
    variants: dict[str, str] = field(default_factory=dict)  # variant name -> its declared base
    task_config: dict[str, dict] = field(default_factory=dict)
    # [tasks.X] / [tasks.X.PROTOCOL] seeds, replacing `seeds`, keyed "X" / "X.PROTOCOL"
    task_seeds: dict[str, int] = field(default_factory=dict)
    description: str = ""
    device: str = "auto"
    executor: dict[str, Any] = field(default_factory=dict)  # [executor]: name and its options

    def seeds_for(self, task: str, protocol: str) -> int:
        """How many seeds the jobs of ``task`` under ``protocol`` run: the protocol table's
        ``seeds``, else the task section's, else the suite's."""
        return self.task_seeds.get(f"{task}.{protocol}", self.task_seeds.get(task, self.seeds))

    def resolve_method(self, name: str) -> ResolvedMethod:
        """What runs method ``name`` (no ``:ARG``) with which settings: a variant's base's
        section overlaid with its own (:mod:`benchharness.variants`)."""
        return resolve(name, self.method_config, self.variants)

    @classmethod
    def from_dict(cls, raw: dict, path: Path | None = None) -> "Suite":
        """Build from parsed TOML; unknown top-level keys are an error naming the file."""
        where = str(path) if path else "suite"
        known = {"name", "description", "backbone", "methods", "tasks", "seeds", "data_root",
                 "synthetic", "device", "executor"}
        unknown = set(raw) - known
        if unknown:
            raise BenchharnessError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        methods_raw = raw.get("methods", {})
        if not isinstance(methods_raw, dict) or "use" not in methods_raw:
            raise BenchharnessError(f"{where}: [methods] needs `use = [\"method\", ...]`")
        tasks_raw = raw.get("tasks", {})
        if not isinstance(tasks_raw, dict) or "use" not in tasks_raw:
            raise BenchharnessError(f"{where}: [tasks] needs `use = [\"task\", ...]`")
        method_cfg = {k: v for k, v in methods_raw.items() if k != "use"}
        task_cfg = {k: copy.deepcopy(v) for k, v in tasks_raw.items() if k != "use"}
        tasks = {t: list(task_cfg.get(t, {}).get("protocols", [])) for t in tasks_raw["use"]}
        task_seeds = {}
        for name, section in task_cfg.items():
            if not isinstance(section, dict):
                continue
            tables = [(name, section)] + [(f"{name}.{protocol}", section[protocol])
                                          for protocol in tasks.get(name, [])
                                          if isinstance(section.get(protocol), dict)]
            for key, table in tables:
                if "seeds" in table:
                    task_seeds[key] = table.pop("seeds")
                    if not isinstance(task_seeds[key], int) or task_seeds[key] < 1:
                        raise BenchharnessError(f"{where}: [tasks.{key}] seeds must be a positive "
                                                f"integer, got {task_seeds[key]!r}")
        return cls(
            name=raw.get("name") or (path.stem if path else "suite"), path=path,
            backbone=raw.get("backbone", "alexnet-small"),
            methods=list(methods_raw["use"]), tasks=tasks, seeds=int(raw.get("seeds", 1)),
            data_root=raw.get("data_root"), synthetic=raw.get("synthetic"),
            method_config=method_cfg, variants=declared_bases(method_cfg, where),
            task_config=task_cfg, task_seeds=task_seeds, description=raw.get("description", ""),
            device=raw.get("device", "auto"), executor=check_executor(raw.get("executor", {}), where))


def find_suite(name_or_path: str) -> Path:
    """A suite file: an existing path, or ``<name>.toml`` in ./benchmarks or the repo's benchmarks/."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    for directory in SUITE_DIRS:
        path = directory / f"{name_or_path}.toml"
        if path.is_file():
            return path
    known = sorted({p.stem for d in SUITE_DIRS if d.is_dir() for p in d.glob("*.toml")})
    raise BenchharnessError(f"no suite {name_or_path!r}: not a file, and not among {known}")


def load_suite(name_or_path: str) -> Suite:
    """Read and validate a suite file."""
    path = find_suite(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise BenchharnessError(f"{path}: not valid TOML ({exc})") from None
    return Suite.from_dict(raw, path)


def split_method_spec(spec: str) -> tuple[str, str | None]:
    """``checkpoint:w.safetensors`` -> (``checkpoint``, ``w.safetensors``); ``random`` -> (``random``, None)."""
    name, sep, arg = spec.partition(":")
    return name, (arg if sep else None)


def method_label(spec: str) -> str:
    """The name a method is shown and stored under (a checkpoint by its file name)."""
    name, arg = split_method_spec(spec)
    return f"{name}:{Path(arg).name}" if arg else name


@dataclass(frozen=True)
class Job:
    """One cell of the grid: a method, a task under a protocol, a seed."""

    suite: str
    method_spec: str
    task: str
    protocol: str
    seed: int
    representation_key: str
    config_hash: str
    task_config: dict = field(hash=False, compare=False)
    base: str | None = None  # a variant's declared base (None: a registered method)
    plugin: str | None = None  # the registered method that pretrains it (None: the spec's name)

    @property
    def method(self) -> str:
        return method_label(self.method_spec)

    @property
    def registered_method(self) -> str:
        """The name of the registered method that pretrains this job's representation."""
        return self.plugin or split_method_spec(self.method_spec)[0]

    @property
    def file_stem(self) -> str:
        return f"{self.task}__{self.protocol}__seed{self.seed}__{self.config_hash}"
