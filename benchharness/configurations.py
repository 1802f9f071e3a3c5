"""One configuration per leaderboard row: results of different settings are never averaged.

Every view that aggregates results (the leaderboard, ``--per-class``, ``--cost``, the report)
labels them with :func:`benchharness.leaderboard._labels`, which calls :func:`check_rows`. Two
results that share a row label conflict when

- their ``representation_key`` differs: the method ran with other settings (its suite section,
  the backbone, a checkpoint's files), e.g. ``[methods.bigan] steps`` changed between two runs
  into one results directory; or
- they are of the same task, protocol and seed with different ``config_hash``: the task's
  settings differ.

Either is a :class:`~benchharness.interfaces.BenchharnessError` naming the row, both hashes,
an example file of each, the settings that differ (from the results' ``method_config`` /
``task_config``, which results record since variants exist) and the ways out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .interfaces import BenchharnessError

NOT_RECORDED = object()


def _read(path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _settings(paths, field: str):
    """``field`` of the first result file among ``paths`` that records it (with the result's
    ``backbone`` and ``method_spec`` for method settings), or NOT_RECORDED."""
    for path in paths:
        data = _read(path)
        if isinstance(data.get(field), dict):
            settings = dict(data[field])
            if field == "method_config":
                settings.update(backbone=data.get("backbone"), method_spec=data.get("method_spec"))
            return settings
    return NOT_RECORDED


def _stored_at(path) -> tuple[str, int]:
    """When a result was stored: its ``finished_at`` (seconds), then its file's time."""
    try:
        mtime = Path(path).stat().st_mtime_ns
    except (OSError, TypeError):
        mtime = 0
    return str(_read(path).get("finished_at") or ""), mtime


def _oldest_first(rows: pd.DataFrame, column: str) -> list:
    """The distinct values of ``column`` in ``rows``, ordered by when their first result was
    stored (:func:`_stored_at`)."""
    first = {}
    for value, path in zip(rows[column], rows["path"]):
        if pd.notna(value):
            first[value] = min(first.get(value, _stored_at(path)), _stored_at(path))
    return sorted(first, key=lambda value: first[value])


def differing(first, second) -> str:
    """The keys whose values differ between two settings dicts, as ``key: a vs b`` text."""
    if first is NOT_RECORDED or second is NOT_RECORDED:
        return "the results do not record their settings (stored before results did)"
    keys = sorted(set(first) | set(second))
    shown = [f"{k}: {first.get(k, 'unset')!r} vs {second.get(k, 'unset')!r}"
             for k in keys if first.get(k, NOT_RECORDED) != second.get(k, NOT_RECORDED)]
    return "they differ in " + "; ".join(shown) if shown else "their recorded settings are equal"


def _described(rows: pd.DataFrame, column: str, values) -> str:
    parts = []
    for value in values:
        part = rows[rows[column] == value]
        plural = "s" * (len(part) != 1)
        parts.append(f"{value} ({len(part)} result{plural}, e.g. {part['path'].iloc[0]})")
    return " and ".join(parts)


def _ways_out(rows: pd.DataFrame, variant: bool) -> str:
    ways = ["give each configuration its own --results directory",
            "remove the result files you no longer want"]
    if variant:
        ways.insert(0, "declare one configuration as a variant ([methods.\"NEW-NAME\"] with "
                       "base = \"METHOD\" in its suite) and run it under that name")
    suites = sorted(str(s) for s in rows["suite"].dropna().unique()) if "suite" in rows else []
    if len(suites) > 1:
        ways.append(f"pick one suite with --suite ({', '.join(suites)} are mixed here)")
    return "; or ".join(ways)


def check_rows(results_df: pd.DataFrame, labels: pd.Series) -> None:
    """Raise a BenchharnessError when results with one row label (``labels``, aligned with
    ``results_df``) were made with different method or task settings (module docstring)."""
    if results_df.empty:
        return
    df = results_df.assign(_label=labels.values)
    for column in ("representation_key", "config_hash", "path", "seed"):
        if column not in df:
            df[column] = None
    for label, rows in df.groupby("_label", sort=False):
        if rows["representation_key"].nunique() > 1:
            keys = _oldest_first(rows, "representation_key")
            first, second = (_settings(rows.loc[rows["representation_key"] == key, "path"],
                                       "method_config") for key in keys[:2])
            raise BenchharnessError(
                f"method {label!r} has results of {len(keys)} configurations, which the "
                f"leaderboard never averages: representation (oldest first) "
                f"{_described(rows, 'representation_key', keys)}; {differing(first, second)}. "
                f"To compare them, {_ways_out(rows, True)}.")
        hashed = rows.dropna(subset=["config_hash"])
        for (task, protocol, seed), cell in hashed.groupby(["task", "protocol", "seed"], sort=False):
            if cell["config_hash"].nunique() > 1:
                hashes = _oldest_first(cell, "config_hash")
                first, second = (_settings(cell.loc[cell["config_hash"] == h, "path"], "task_config")
                                 for h in hashes[:2])
                raise BenchharnessError(
                    f"method {label!r}, {task} {protocol} seed {seed}: results of {len(hashes)} "
                    f"configurations, which the leaderboard never averages: config hash (oldest "
                    f"first) {_described(cell, 'config_hash', hashes)}; {differing(first, second)}. "
                    f"Keep one: {_ways_out(rows, False)}.")
