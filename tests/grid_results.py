"""What the executor tests compare: the values a run stored."""

from __future__ import annotations

import json
from pathlib import Path


def values(results: Path) -> dict[tuple, tuple]:
    """(method, protocol, seed) -> (status, value, torch threads) of every stored result."""
    out = {}
    for path in (results / "runs").rglob("*.json"):
        r = json.loads(path.read_text())
        out[(r["method"], r["protocol"], r["seed"])] = (r["status"], r["value"], r["torch_threads"])
    return out
