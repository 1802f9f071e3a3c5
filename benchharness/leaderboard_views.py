"""The leaderboard's two other views: AP per class, and what each method cost.

``per_class``
    One row per (method, task, protocol, metric), one column per class: the mean over seeds of
    the result's ``per_class`` values (``n`` says how many seeds), beside the mean of its
    ``value``. Only successful results count. Row labels follow the leaderboard's
    (:func:`benchharness.leaderboard._labels`: schedule fractions and data kept apart).
``cost``
    One row per method: the jobs and failed jobs; pretraining seconds (each distinct
    representation the method's results used, counted once, from ``representation.
    pretrain_seconds``); transfer seconds (the sum over its jobs, failed ones included, of
    ``wall_seconds`` less any pretraining done inside the job); the devices; GPU-hours (the
    seconds spent on CUDA times the processes of each step, over 3600; empty without CUDA); and
    the peak memory (the largest ``info.peak_memory_mb`` of its jobs: GPU memory allocated on
    CUDA, the job process's peak resident memory on a CPU).

Both render as ``markdown``, ``html``, ``latex`` (booktabs, :mod:`benchharness.latex`) and
``csv`` (raw numbers: the per-class CSV is long, one line per class).
"""

from __future__ import annotations

import html
import math

import pandas as pd
from tabulate import tabulate

from . import latex
from .leaderboard import FORMATS, _group_key, _labels, legend

COST_NOTES = (
    "pretrain s: pretraining time of each distinct representation the method's results used, "
    "counted once; transfer s: sum over the method's jobs (failed ones included) of their wall "
    "time less any pretraining done inside the job; GPU-hours: seconds on CUDA times processes, "
    "over 3600; peak mem: the largest of its jobs (CUDA: memory allocated; CPU: the job "
    "process's peak resident memory, which for a pool worker covers its earlier jobs too)."
)


def _check(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def _prepared(results_df: pd.DataFrame) -> pd.DataFrame:
    df = results_df.copy()
    df["group"] = df["group"].where(df["group"].notna(), "unknown").astype(str)
    df["method"] = _labels(df) if not df.empty else df["method"]
    return df


# -------------------------------------------------------------------------------- per class


def per_class(results_df: pd.DataFrame | None) -> tuple[pd.DataFrame, list[str]]:
    """The per-class table, long: one line per (group, method, task, protocol, metric, class)
    with ``mean``, ``std`` (ddof=1, NaN for one seed), ``n`` and the row's ``value`` (mean of the
    results' values); and the class names in the order they first appear."""
    cols = ["group", "method", "task", "protocol", "metric", "class", "mean", "std", "n", "value"]
    if results_df is None or results_df.empty:
        return pd.DataFrame(columns=cols), []
    df = _prepared(results_df)
    df = df[(df["status"] == "ok") & df["value"].notna()]
    records, classes = [], {}
    keys = ["group", "method", "task", "protocol", "metric"]
    df = df.assign(metric=df["metric"].where(df["metric"].notna(), "?").astype(str))
    for key, part in df.groupby(keys, sort=False):
        table = pd.DataFrame([pc if isinstance(pc, dict) else {} for pc in part["per_class"]])
        value = float(part["value"].mean())
        for name in table.columns:
            classes.setdefault(name, None)
            values = pd.to_numeric(table[name], errors="coerce").dropna()
            if values.empty:
                continue
            records.append(dict(zip(keys, key), **{
                "class": name, "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                "n": len(values), "value": value}))
    out = pd.DataFrame(records, columns=cols)
    if not out.empty:
        out = out.assign(_g=out["group"].map(_group_key)).sort_values(
            ["_g", "method", "task", "protocol", "metric"], kind="stable").drop(columns="_g")
    return out.reset_index(drop=True), list(classes)


def render_per_class(results_df: pd.DataFrame | None, fmt: str = "markdown") -> str:
    """The per-class view as text (see the module docstring); numbers with one decimal."""
    _check(fmt)
    long, classes = per_class(results_df)
    if fmt == "csv":
        return long.to_csv(index=False)
    keys = ["group", "method", "task", "protocol", "metric"]
    rows = []
    for key, part in long.groupby(keys, sort=False):
        by_class = dict(zip(part["class"], part["mean"]))
        rows.append((key, int(part["n"].max()), float(part["value"].iloc[0]),
                     [f"{by_class[c]:.1f}" if c in by_class else "" for c in classes]))
    notes = legend(results_df) + [
        "Mean over seeds of each class's value (n seeds); value: the mean of the results' values."]
    if fmt == "latex":
        blocks: list[latex.Block] = []
        for (group, method, task, protocol, metric), n, value, cells in rows:
            if not blocks or blocks[-1].label != latex.escape(group):
                blocks.append(latex.Block(latex.escape(group)))
            blocks[-1].rows.append([latex.escape(x) for x in (method, task, protocol, metric, str(n),
                                                              f"{value:.1f}", *cells)])
        columns = [("", "n"), ("", "value")] + [("per class", c) for c in classes]
        return latex.booktabs(["Group", "Method", "Task", "Protocol", "Metric"], columns, blocks,
                              caption=" ".join(latex.escape(n) for n in notes),
                              label="tab:benchharness-per-class",
                              comments=["benchharness leaderboard --per-class --format latex; "
                                        "needs \\usepackage{booktabs}"])
    headers = [*keys, "n", "value", *classes]
    body = [[*key, str(n), f"{value:.1f}", *cells] for key, n, value, cells in rows]
    return _text_table(headers, body, notes, fmt)


# ------------------------------------------------------------------------------------ cost


def _nested(value, *path):
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def cost(results_df: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (group, method) with ``jobs``, ``failed``, ``pretrain_s``, ``transfer_s``,
    ``devices``, ``gpu_hours`` (NaN without CUDA) and ``peak_memory_mb`` (see the module
    docstring). ``results_df`` comes from :func:`benchharness.leaderboard.load_results`."""
    cols = ["group", "method", "jobs", "failed", "pretrain_s", "transfer_s", "devices", "gpu_hours",
            "peak_memory_mb"]
    if results_df is None or results_df.empty:
        return pd.DataFrame(columns=cols)
    df = _prepared(results_df)
    records = []
    for (group, method), part in df.groupby(["group", "method"], sort=False):
        pretrain_s = transfer_s = gpu_s = 0.0
        devices, representations, peaks = set(), {}, []
        for _, r in part.iterrows():
            rep, timing, info = r.get("representation"), r.get("timing"), r.get("info")
            rep = rep if isinstance(rep, dict) else {}
            key = rep.get("config_hash") or r.get("representation_key")
            seconds = _number(rep.get("pretrain_seconds"))
            if key is not None and not math.isnan(seconds):
                processes = _number(_nested(rep, "distributed", "world_size"))
                representations[key] = (seconds, str(rep.get("device") or r.get("device")),
                                        1.0 if math.isnan(processes) else processes)
            wall = _number(r.get("wall_seconds"))
            if not math.isnan(wall) and _nested(timing, "pretrain_cached") is False:
                wall -= _number(_nested(timing, "pretrain")) if not math.isnan(
                    _number(_nested(timing, "pretrain"))) else 0.0
            device = r.get("device")
            if isinstance(device, str) and device:
                devices.add(device)
            if not math.isnan(wall):
                transfer_s += wall
                if isinstance(device, str) and device.startswith("cuda"):
                    processes = _number(_nested(info, "distributed", "world_size"))
                    gpu_s += wall * (1.0 if math.isnan(processes) else processes)
            peak = _number(_nested(info, "peak_memory_mb"))
            if not math.isnan(peak):
                peaks.append(peak)
        for seconds, device, processes in representations.values():
            pretrain_s += seconds
            devices.add(device)
            if device.startswith("cuda"):
                gpu_s += seconds * processes
        on_cuda = any(d.startswith("cuda") for d in devices)
        failed = int(((part["status"] != "ok") | part["value"].isna()).sum())
        records.append(dict(group=group, method=method, jobs=len(part), failed=failed,
                            pretrain_s=pretrain_s if representations else math.nan,
                            transfer_s=transfer_s, devices=", ".join(sorted(devices)),
                            gpu_hours=gpu_s / 3600 if on_cuda else math.nan,
                            peak_memory_mb=max(peaks) if peaks else math.nan))
    out = pd.DataFrame(records, columns=cols)
    return out.assign(_g=out["group"].map(_group_key)).sort_values(
        ["_g", "method"], kind="stable").drop(columns="_g").reset_index(drop=True)


def _fmt(x, digits: int) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def render_cost(results_df: pd.DataFrame | None, fmt: str = "markdown") -> str:
    """The cost view as text (see the module docstring): seconds with no decimals, GPU-hours
    with three, memory in MiB with no decimals."""
    _check(fmt)
    table = cost(results_df)
    if fmt == "csv":
        return table.to_csv(index=False)
    rows = [(r.group, [r.method, str(r.jobs), str(r.failed), _fmt(r.pretrain_s, 0), _fmt(r.transfer_s, 0),
                       r.devices, _fmt(r.gpu_hours, 3), _fmt(r.peak_memory_mb, 0)])
            for r in table.itertuples()]
    names = ["method", "jobs", "failed", "pretrain s", "transfer s", "device", "GPU-hours",
             "peak mem (MiB)"]
    notes = legend(results_df) + [COST_NOTES]
    if fmt == "latex":
        blocks: list[latex.Block] = []
        for group, cells in rows:
            if not blocks or blocks[-1].label != latex.escape(group):
                blocks.append(latex.Block(latex.escape(group)))
            blocks[-1].rows.append([latex.escape(c) for c in cells])
        return latex.booktabs(["Group", "Method"], [("", n) for n in names[1:]], blocks,
                              caption=" ".join(latex.escape(n) for n in notes),
                              label="tab:benchharness-cost",
                              comments=["benchharness leaderboard --cost --format latex; "
                                        "needs \\usepackage{booktabs}"])
    return _text_table(["group", *names], [[group, *cells] for group, cells in rows], notes, fmt)


def _text_table(headers: list[str], body: list[list[str]], notes: list[str], fmt: str) -> str:
    if fmt == "html":
        esc = lambda s: html.escape(str(s), quote=False)  # noqa: E731
        table = tabulate([[esc(c) for c in row] for row in body], headers=[esc(h) for h in headers],
                         tablefmt="unsafehtml", disable_numparse=True)
        return table + "\n" + "".join(f"<p>{esc(n)}</p>\n" for n in notes)
    esc = lambda s: str(s).replace("|", r"\|")  # noqa: E731
    table = tabulate([[esc(c) for c in row] for row in body], headers=[esc(h) for h in headers],
                     tablefmt="github", disable_numparse=True)
    return table + "\n" + "".join(f"\n{n}\n" for n in notes)
