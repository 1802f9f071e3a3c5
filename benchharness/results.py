"""The results store: one JSON file per finished job, written atomically.

Layout: ``<results>/runs/<suite>/<method label>/<task>__<protocol>__seed<k>__<config hash>.json``.
A job counts as done when its file exists with ``status == "ok"``; a failed job's file records
the error and is replaced when the job is run again and succeeds.
"""

from __future__ import annotations

import json
import re
import subprocess
from functools import lru_cache
from pathlib import Path

from . import __version__, atomic
from .suite import Job

SCHEMA_VERSION = 1


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", part)


class ResultStore:
    """Reads and writes job results under ``root/runs``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.runs = self.root / "runs"

    def path_for(self, job: Job) -> Path:
        """Where the result of ``job`` lives."""
        return self.runs / _safe(job.suite) / _safe(job.method) / f"{_safe(job.file_stem)}.json"

    def read(self, job: Job) -> dict | None:
        """The stored result of ``job``, or None when absent or unreadable."""
        try:
            return json.loads(self.path_for(job).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_done(self, job: Job) -> bool:
        """True when ``job`` has a successful result on disk."""
        result = self.read(job)
        return bool(result) and result.get("status") == "ok"

    def write(self, job: Job, result: dict) -> Path:
        """Store ``result`` for ``job`` atomically; returns its path."""
        path = self.path_for(job)
        atomic.write_json(path, {"schema": SCHEMA_VERSION, **result})
        return path


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Package, git commit, torch and torchvision versions, for every result's provenance."""
    import torch
    import torchvision

    commit = "unknown"
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            commit = out.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=Path(__file__).resolve().parent, capture_output=True,
                                   text=True, timeout=5)
            if dirty.stdout.strip():
                commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"benchharness": __version__, "git_commit": commit, "torch": torch.__version__,
            "torchvision": torchvision.__version__}
