"""The numbers of each report section, gathered from a results store (no figures, no HTML).

Every function takes the frame of :func:`benchharness.leaderboard.load_results` (one row per
result file) and, where a section needs fields the leaderboard does not read (timing, pretext,
versions, data), the result files themselves through :func:`read_records`. Rows are labelled as
the leaderboard labels them (:func:`benchharness.leaderboard.summarize`), so that a method reads
the same in every section.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import leaderboard as lb

def read_records(results_df: pd.DataFrame) -> list[dict]:
    """The result JSON of every row of ``results_df`` (same order), with the row's ``label``
    (leaderboard row label), ``column`` and ``path`` added. Unreadable files give ``{}``."""
    labels = lb._labels(results_df) if not results_df.empty else pd.Series(dtype=object)
    records = []
    for (_, row), label in zip(results_df.iterrows(), labels):
        try:
            data = json.loads(Path(row["path"]).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        data = dict(data) if isinstance(data, dict) else {}
        data.update(label=label, column=lb._column_of(row["task"], row["protocol"]), path=row["path"])
        records.append(data)
    return records


def is_ok(record: dict) -> bool:
    """A result with status ``ok`` and a numeric value."""
    value = record.get("value")
    return record.get("status") == "ok" and isinstance(value, (int, float)) and not math.isnan(value)


# ---------------------------------------------------------------------------- leaderboard


@dataclass
class Cell:
    """One leaderboard cell: the leaderboard's text, best mark, exact values and errors."""

    text: str = ""
    best: bool = False
    value: float | None = None  # the mean the text rounds (single-metric cells)
    title: str = ""  # exact values, shown on hover
    errors: list[str] = field(default_factory=list)


@dataclass
class Row:
    """One leaderboard row (measured or published)."""

    group: str
    method: str
    source: str
    published: bool
    cells: dict[str, Cell]


@dataclass
class Leaderboard:
    """The leaderboard of :func:`benchharness.leaderboard.render`, split for the page."""

    columns: list[str]
    measured: list[Row]
    published: list[Row]
    notes: list[str]
    failures: list[dict]


def _pm(text: str) -> str:
    return text.replace(lb._PM, "±")


def leaderboard(results_df: pd.DataFrame, reference_df: pd.DataFrame | None) -> Leaderboard:
    """The table of :mod:`benchharness.leaderboard` (same rows, cell texts and best marks), each
    measured cell with its exact mean/std/n as a hover title and the errors of its failed jobs."""
    rows, columns, notes = lb._build(results_df, reference_df)
    summary = lb.summarize(results_df)
    exact = defaultdict(list)
    for _, s in summary.iterrows():
        exact[(s["group"], s["method"], s["column"])].append(s)
    failures = []
    errors = defaultdict(list)
    if not results_df.empty:
        df = results_df.assign(label=lb._labels(results_df),
                               column=[lb._column_of(t, p) for t, p in zip(results_df["task"],
                                                                           results_df["protocol"])])
        df["group"] = df["group"].where(df["group"].notna(), "unknown").astype(str)
        bad = df[(df["status"] != "ok") | df["value"].isna()]
        for _, r in bad.sort_values(["label", "column", "seed"], na_position="last").iterrows():
            error = r["error"] or f"status {r['status']!r} without a value"
            failures.append(dict(method=r["label"], group=r["group"], task=r["task"],
                                 protocol=r["protocol"], seed=r["seed"], error=str(error),
                                 path=r["path"]))
            errors[(r["group"], r["label"], r["column"])].append(f"seed {r['seed']}: {error}")
    measured, published = [], []
    for row in rows:
        cells = {}
        for column in columns:
            base = row.cells.get(column)
            cell = Cell(text=_pm(base.text) if base else "", best=bool(base and base.best))
            if not row.published:
                parts = exact.get((row.group, row.method, column), [])
                ok = [s for s in parts if s["n"] > 0]
                if len(ok) == 1:
                    cell.value = float(ok[0]["mean"])
                cell.title = "; ".join(
                    f"{s['metric']}: mean {s['mean']!r}" + ("" if math.isnan(s["std"]) else f", std {s['std']!r}")
                    + f", n {int(s['n'])}" for s in ok)
                cell.errors = errors.get((row.group, row.method, column), [])
                if cell.errors:
                    cell.title = "; ".join([cell.title, *cell.errors]) if cell.title else "; ".join(cell.errors)
            cells[column] = cell
        target = published if row.published else measured
        target.append(Row(row.group, row.method, row.source, row.published, cells))
    return Leaderboard(columns, measured, published, [_pm(n) for n in notes], failures)


# ------------------------------------------------------------------------------ per class


def per_class(records: list[dict]) -> dict[str, pd.DataFrame]:
    """Per column (``cls fc8``, ``det``, ...): methods x classes, the mean per-class value over
    the column's successful seeds (classes in the results' order)."""
    acc: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if is_ok(r) and isinstance(r.get("per_class"), dict) and r["per_class"]:
            acc[r["column"]][r["label"]].append(r["per_class"])
    out = {}
    for column in _ordered_columns(acc):
        frame = pd.DataFrame({m: pd.DataFrame(v).mean(axis=0) for m, v in acc[column].items()}).T
        classes = list(dict.fromkeys(c for runs in acc[column].values() for pc in runs for c in pc))
        out[column] = frame.loc[sorted(frame.index), classes].astype(float)
    return out


def _ordered_columns(columns) -> list[str]:
    standard = [c[0] for c in lb.COLUMNS]
    return [c for c in standard if c in columns] + sorted(c for c in columns if c not in standard)


# ------------------------------------------------------------------------------ PR picks


def column_means(records: list[dict]) -> dict[str, dict[str, float]]:
    """Per column, each method's mean value over its successful seeds."""
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if is_ok(r):
            acc[r["column"]][r["label"]].append(float(r["value"]))
    return {c: {m: sum(v) / len(v) for m, v in ms.items()} for c, ms in acc.items()}


def pick_methods(means: dict[str, float], wanted: list[str] | None) -> list[str]:
    """The methods whose curves are drawn: ``wanted`` (those present), else best and worst."""
    if wanted:
        return [m for m in wanted if m in means]
    if not means:
        return []
    ranked = sorted(means, key=lambda m: (-means[m], m))
    return list(dict.fromkeys([ranked[0], ranked[-1]]))


def first_seed(records: list[dict], column: str, method: str) -> dict | None:
    """The successful result of ``method`` in ``column`` with the lowest seed."""
    found = [r for r in records if is_ok(r) and r["column"] == column and r["label"] == method]
    return min(found, key=lambda r: (r.get("seed") is None, r.get("seed") or 0), default=None)


# ------------------------------------------------------------------------------ pretext


def relative_to_chance(pretext: dict) -> float | None:
    """How many times better than chance a pretext figure is: ``value / chance``, or
    ``chance / value`` for a metric marked lower-is-better; None when either is missing or 0."""
    try:
        value, chance = float(pretext["value"]), float(pretext["chance"])
    except (KeyError, TypeError, ValueError):
        return None
    if "lower is better" in str(pretext.get("metric", "")):
        value, chance = chance, value
    if chance <= 0 or math.isnan(value) or math.isnan(chance):
        return None
    return value / chance


def pretext_points(records: list[dict]) -> pd.DataFrame:
    """One row per method: its pretext metric, value, the untrained network's value
    (``value_at_init``, None where the method did not record it), chance, ratio to chance, and
    the mean value of each leaderboard column it has."""
    means = column_means(records)
    rows = []
    for method in sorted({r["label"] for r in records}):
        pretext = next((r["pretext"] for r in records
                        if r["label"] == method and isinstance(r.get("pretext"), dict)), None)
        row = dict(method=method, metric=None, value=None, value_at_init=None, chance=None, ratio=None)
        if pretext:
            row.update(metric=pretext.get("metric"), value=pretext.get("value"),
                       value_at_init=pretext.get("value_at_init"),
                       chance=pretext.get("chance"), ratio=relative_to_chance(pretext))
        for column, by_method in means.items():
            if method in by_method:
                row[column] = by_method[method]
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.astype(object).where(frame.notna(), None)


# ------------------------------------------------------------------------------ cost


def cost(records: list[dict]) -> list[dict]:
    """Per method: pretraining and transfer wall time (seconds), devices, GPU-hours and peak
    memory (MB).

    Pretraining counts once per representation (every job of a method shares it); transfer is
    the sum over the method's jobs. GPU-hours are seconds/3600 of the work done on CUDA
    devices, 0 on CPU. Peak memory is the largest ``info.peak_memory_mb`` of its jobs.
    """
    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_method[r["label"]].append(r)
    rows = []
    for method in sorted(by_method):
        pretrain, pretrain_devices = {}, set()
        transfer, devices, gpu_seconds, peak, jobs = 0.0, set(), 0.0, None, 0
        for r in by_method[method]:
            rep = r.get("representation") or {}
            timing = r.get("timing") or {}
            key = r.get("representation_key") or rep.get("config_hash")
            seconds = rep.get("pretrain_seconds", timing.get("pretrain"))
            if key not in pretrain and isinstance(seconds, (int, float)):
                pretrain[key] = float(seconds)
                rep_device = str(rep.get("device") or r.get("device") or "")
                pretrain_devices.add(rep_device)
                if rep_device.startswith("cuda"):
                    gpu_seconds += float(seconds)
            if isinstance(timing.get("transfer"), (int, float)):
                jobs += 1
                transfer += float(timing["transfer"])
                device = str(r.get("device") or "")
                devices.add(device)
                if device.startswith("cuda"):
                    gpu_seconds += float(timing["transfer"])
            mem = (r.get("info") or {}).get("peak_memory_mb")
            if isinstance(mem, (int, float)):
                peak = max(peak or 0.0, float(mem))
        all_devices = sorted(d for d in devices | pretrain_devices if d)
        on_gpu = any(d.startswith("cuda") for d in all_devices)
        rows.append(dict(method=method, pretrain_s=sum(pretrain.values()) if pretrain else None,
                         transfer_s=transfer if jobs else None, jobs=jobs,
                         devices=", ".join(all_devices) or "unrecorded",
                         gpu_hours=gpu_seconds / 3600 if on_gpu else None,
                         on_gpu=on_gpu, peak_memory_mb=peak))
    return rows


# ------------------------------------------------------------------------------ provenance


def provenance(records: list[dict]) -> dict:
    """Versions and commits (each with how many results carry it), suites, data identities and
    each (method, task, protocol)'s config hashes."""
    versions, suites, data = defaultdict(int), defaultdict(int), {}
    hashes = defaultdict(set)
    for r in records:
        v = r.get("versions") or {}
        versions[tuple(sorted((str(k), str(x)) for k, x in v.items()))] += 1
        suites[str(r.get("suite"))] += 1
        ident = r.get("data") if isinstance(r.get("data"), dict) else {}
        key = ident.get("key") or lb.UNRECORDED
        data.setdefault(key, {"key": key, **{k: ident.get(k) for k in
                                              ("tag", "root", "splits", "synthetic", "layout")}, "n": 0})
        data[key]["n"] += 1
        hashes[(r["label"], r.get("task"), r.get("protocol"))].add(
            (str(r.get("config_hash")), str(r.get("representation_key"))))
    return dict(
        versions=[dict(items=dict(k), n=n) for k, n in sorted(versions.items(), key=lambda kv: -kv[1])],
        suites=dict(sorted(suites.items())),
        data=sorted(data.values(), key=lambda d: str(d["tag"])),
        hashes=[dict(method=m, task=t, protocol=p,
                     config=", ".join(sorted({c for c, _ in hs})),
                     representation=", ".join(sorted({k for _, k in hs})))
                for (m, t, p), hs in sorted(hashes.items(), key=lambda kv: tuple(map(str, kv[0])))],
    )
