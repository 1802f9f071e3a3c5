"""What the experiment-tracker plugins send, and how they are switched on.

The trackers (``plugins/track_tensorboard.py``, ``track_mlflow.py``, ``track_wandb.py``) are
``benchharness_on_result`` hook implementations. Each does nothing unless its environment
variable is set (:data:`ENV`), imports its library only then, and raises :class:`TrackerError`
naming the package to install when the library is missing. The hook is called in the process
that drives the run (inline: the one running the jobs; pool and submitit: the driver, as each
result comes back), so a tracker never runs inside a worker or a cluster job.

This module only shapes a result into names, tags and numbers; each plugin writes them.
"""

from __future__ import annotations

import importlib
import math
import os

from .interfaces import BenchharnessError

ENV = {
    "tensorboard": "BENCHHARNESS_TENSORBOARD",  # a folder: event files under FOLDER/<method>/
    "mlflow": "BENCHHARNESS_MLFLOW_URI",  # a tracking URI: sqlite:///mlflow.db, a folder, http://...
    "wandb": "BENCHHARNESS_WANDB_PROJECT",  # a project name; WANDB_MODE=offline keeps it local
}
"""Each tracker's switch: the environment variable that turns it on, and what it holds."""

MLFLOW_EXPERIMENT = "BENCHHARNESS_MLFLOW_EXPERIMENT"
"""The MLflow experiment name (default ``benchharness``)."""

WANDB_DIR = "BENCHHARNESS_WANDB_DIR"
"""Where W&B writes its run folders (default: W&B's own, ``WANDB_DIR`` or ``./wandb``)."""

TAG_FIELDS = ("method", "group", "task", "protocol", "seed", "suite", "status", "metric",
              "config_hash", "representation_key", "device", "schedule_fraction")
"""The result fields every tracker records as tags (or config) of its run."""


class TrackerError(BenchharnessError):
    """A tracker is switched on but cannot work (its library is not installed)."""


def setting(tracker: str) -> str | None:
    """The value of ``tracker``'s environment variable, or None when it is off."""
    return os.environ.get(ENV[tracker]) or None


def require(module: str, package: str, tracker: str):
    """Import ``module`` for ``tracker``, or raise :class:`TrackerError` saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise TrackerError(f"{ENV[tracker]} is set but {package} cannot be imported ({exc}); "
                           f"pip install {package} (or benchharness[trackers])") from None


def run_name(result: dict) -> str:
    """``<method> <task> <protocol> seed <k>``: one tracker run per result."""
    return f"{result.get('method')} {result.get('task')} {result.get('protocol')} seed {result.get('seed')}"


def tags(result: dict) -> dict[str, str]:
    """:data:`TAG_FIELDS` of ``result`` as strings (absent ones left out), plus the data tag."""
    out = {k: str(result[k]) for k in TAG_FIELDS if result.get(k) is not None}
    data = result.get("data")
    if isinstance(data, dict) and data.get("tag"):
        out["data"] = str(data["tag"])
    return out


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) or math.isinf(value) else float(value)


def scalars(result: dict) -> dict[str, float]:
    """The numbers of ``result`` by name: ``value``; ``metric/<id>`` per metric; ``per_class/
    <class>`` per class; ``timing/<step>`` (seconds); ``wall_seconds``; ``peak_memory_mb``.
    A failed result has only its timing numbers, if any."""
    out: dict[str, float] = {}

    def put(name, value):
        number = _number(value)
        if number is not None:
            out[name] = number

    put("value", result.get("value"))
    for group, field in (("metric", "per_metric"), ("per_class", "per_class"), ("timing", "timing")):
        values = result.get(field)
        if isinstance(values, dict):
            for key, value in values.items():
                put(f"{group}/{key}", value)
    put("wall_seconds", result.get("wall_seconds"))
    info = result.get("info")
    if isinstance(info, dict):
        put("peak_memory_mb", info.get("peak_memory_mb"))
    return out
