"""TensorBoard tracker: each result's numbers as scalars in event files.

On when ``BENCHHARNESS_TENSORBOARD=DIR`` is set (needs the ``tensorboard`` package, written
through ``torch.utils.tensorboard``). One TensorBoard run per method (``DIR/<method>/``), so that
TensorBoard overlays methods; each result's scalars are tagged ``<task>/<protocol>/<name>``
(names from :func:`benchharness.trackers.scalars`) at step = seed, and a text summary
``<task>/<protocol>/result`` holds its tags (and error, for a failed job).
"""

from __future__ import annotations

import atexit
import re
from pathlib import Path

from benchharness import hookimpl
from benchharness.trackers import require, scalars, setting, tags

_WRITERS: dict[Path, object] = {}  # one writer per run folder, for the life of the process


def _writer(directory: Path):
    if directory not in _WRITERS:
        tensorboard = require("torch.utils.tensorboard", "tensorboard", "tensorboard")
        if not _WRITERS:
            atexit.register(close)
        _WRITERS[directory] = tensorboard.SummaryWriter(log_dir=str(directory))
    return _WRITERS[directory]


def close() -> None:
    """Flush and close every open event file (also called at exit)."""
    while _WRITERS:
        _WRITERS.popitem()[1].close()


@hookimpl
def benchharness_on_result(result):
    """Write ``result``'s scalars and a text summary under ``$BENCHHARNESS_TENSORBOARD``."""
    root = setting("tensorboard")
    if root is None:
        return
    label = re.sub(r"[^A-Za-z0-9._+-]+", "_", str(result.get("method")))
    writer = _writer(Path(root) / label)
    prefix = f"{result.get('task')}/{result.get('protocol')}"
    step = int(result.get("seed") or 0)
    for name, value in scalars(result).items():
        writer.add_scalar(f"{prefix}/{name}", value, global_step=step)
    summary = [f"{k}: {v}" for k, v in tags(result).items()]
    if result.get("error"):
        summary.append(f"error: {result['error']}")
    writer.add_text(f"{prefix}/result", "  \n".join(summary), global_step=step)
    writer.flush()
