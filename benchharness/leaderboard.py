"""Leaderboard: result JSON files -> pandas -> markdown / LaTeX / HTML / CSV tables.

The table has the shape of the published AlexNet-era transfer table: one row per method,
grouped by supervision (``sup``, ``self-sup``, ``unsup``, ``none``, in that order; any other
group after them), and the columns ``cls fc8``, ``cls fc6-8``, ``cls all`` (task ``voc07-cls``
under those protocols), ``det`` (``voc07-det``, protocol ``all``) and ``seg`` (``voc12-seg``,
protocol ``all``). Results of other task/protocol pairs get extra columns ``"<task> <protocol>"``,
except the layer-wise ones (``conv1``, ``probe-fc7``, ...: :mod:`benchharness.layer_protocols`),
which ``leaderboard --view layers`` shows (:mod:`benchharness.leaderboard_layers`); a note says
how many there are.

Cells
    ``mean ± std`` over seeds, std being the sample standard deviation (ddof=1); a single seed
    shows the value alone. When cells differ in their number of seeds, those that differ from the
    most common count carry ``(n=k)``. A cell whose jobs all failed reads ``failed``; a cell with
    some failed seeds shows the mean of the others followed by ``(k failed)``. Should one cell
    hold results of two metric ids, each is shown separately with its id in brackets; numbers of
    different metrics are never averaged together.
Metric ids
    A line under the table names the metric id(s) of each measured column.
Best values
    The best measured value of each column (by its displayed one-decimal value, higher is
    better; ties all marked) is bold: ``**x**`` in markdown, ``\\textbf{x}`` in LaTeX, ``<b>x</b>``
    in HTML. Published rows never take part in that ranking, and a column mixing metric ids
    gets no best mark (the footnote says so).
Published rows
    :func:`load_reference` reads ``results/reference/published_voc_transfer.csv``; its rows sit
    after the measured rows of the same group, labelled ``<method> [published: <source>]``
    (``(rescaled)`` added for rescaled models), with their source in the ``source`` column
    (measured rows read ``measured`` there).
One configuration per row
    Results of one method whose settings differ (another ``representation_key``, or another
    ``config_hash`` for the same task, protocol and seed) are never averaged: every view stops
    with an error naming both and what differs (:mod:`benchharness.configurations`).
Schedule fraction and data
    Results of ``run --schedule-fraction F`` (F < 1) are rows of their own, labelled
    ``<method> †`` (``<method> †F`` when several fractions are present), with a legend line naming
    F; they are never averaged with full-schedule results. Results of different data (the
    ``data`` identity each result records: resolved path and split-file fingerprint) are never
    averaged together either: when more than one data identity is present, each row's label
    ends with ``[data TAG]`` and a legend line names each tag's folder.
LaTeX
    ``fmt="latex"`` gives a booktabs ``table`` shaped like Table 5.3 (:mod:`benchharness.latex`):
    a two-level header (Classification fc8 / fc6-8 / all, Detection, Segmentation; other
    columns headed by task and protocol), the group label once per block, ``\\midrule`` between
    groups, and the notes in the caption.
CSV
    ``fmt="csv"`` gives a tidy long table instead (one line per row and column, raw numeric
    ``mean``, ``std``, ``n``, ``n_failed``, a boolean ``best`` and a ``published`` flag), which is
    what a spreadsheet or pandas wants.
"""

from __future__ import annotations

import html
import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from . import latex
from .configurations import check_rows
from .interfaces import GROUPS, DataError
from .layer_protocols import is_layer_protocol

COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    # (column label, task, protocol, column of the published CSV)
    ("cls fc8", "voc07-cls", "fc8", "cls_fc8"),
    ("cls fc6-8", "voc07-cls", "fc6-8", "cls_fc6_8"),
    ("cls all", "voc07-cls", "all", "cls_all"),
    ("det", "voc07-det", "all", "det_frcn"),
    ("seg", "voc12-seg", "all", "seg_fcn"),
)
"""The standard columns, in display order."""

HEADERS = {
    "cls fc8": ("Classification", "fc8"),
    "cls fc6-8": ("Classification", "fc6-8"),
    "cls all": ("Classification", "all"),
    "det": ("Detection", "all"),
    "seg": ("Segmentation", "all"),
}
"""The two header levels of the standard columns in LaTeX (the protocol under each task)."""

RESULT_FIELDS = (
    "status", "error", "method", "group", "task", "protocol", "metric", "value",
    "per_class", "seed", "suite", "config_hash", "schedule_fraction",
    # what the cost view reads (benchharness.leaderboard_views)
    "device", "wall_seconds", "timing", "info", "representation", "representation_key",
)
"""Keys read from every result JSON (``load_results`` adds ``path``, ``data_key``, ``data_tag``
and ``data_root`` from the result's ``data`` record; ``schedule_fraction`` defaults to 1)."""

DATA_FIELDS = ("data_key", "data_tag", "data_root")

UNRECORDED = "unrecorded"
"""The data tag of results stored before results recorded their data."""

REFERENCE_COLUMNS = (
    "source", "table", "method", "group", "rescaled",
    "cls_fc8", "cls_fc6_8", "cls_all", "det_frcn", "seg_fcn",
)

PUBLISHED_METRICS = {
    "cls": "non-interpolated (sklearn-style) AP, difficult ignored",
    "det": "VOC07 11-point AP (Fast R-CNN)",
    "seg": "mean IoU (FCN-32s, VOC12 val)",
}

REFERENCE_CSV = Path(__file__).resolve().parent.parent / "results" / "reference" / "published_voc_transfer.csv"
"""Where the published table lives in a source checkout."""

FORMATS = ("markdown", "latex", "html", "csv")

_PM = "\x00pm\x00"  # placeholder for the plus-minus sign, replaced per format after escaping


# --------------------------------------------------------------------------------- loading


def load_results(results_dir: Path | str) -> pd.DataFrame:
    """Every ``*.json`` under ``results_dir/runs/`` (recursively) as one row per job.

    Columns: :data:`RESULT_FIELDS` plus ``path``. ``value`` is a float (NaN where absent). A file
    that is not valid JSON, not a JSON object, or lacks ``method``/``task``/``protocol`` is
    skipped with a warning naming it. A missing ``runs/`` folder gives an empty frame.
    """
    runs = Path(results_dir) / "runs"
    records = []
    paths = sorted(runs.rglob("*.json")) if runs.is_dir() else []
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            warnings.warn(f"{path}: skipped, not a readable JSON result ({exc})", stacklevel=2)
            continue
        if not isinstance(data, dict):
            warnings.warn(f"{path}: skipped, not a JSON object", stacklevel=2)
            continue
        missing = [k for k in ("method", "task", "protocol") if not data.get(k)]
        if missing:
            warnings.warn(f"{path}: skipped, missing {', '.join(missing)}", stacklevel=2)
            continue
        record = {k: data.get(k) for k in RESULT_FIELDS}
        record["path"] = str(path)
        ident = data.get("data") if isinstance(data.get("data"), dict) else {}
        record["data_key"] = ident.get("key") or UNRECORDED
        record["data_tag"] = ident.get("tag") or UNRECORDED
        record["data_root"] = ident.get("root") or data.get("data_root")
        records.append(record)
    df = pd.DataFrame(records, columns=[*RESULT_FIELDS, "path", *DATA_FIELDS])
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    df["schedule_fraction"] = pd.to_numeric(df["schedule_fraction"], errors="coerce").fillna(1.0).astype(float)
    return df


def load_reference(path: Path | str = REFERENCE_CSV) -> pd.DataFrame:
    """The published numbers (columns :data:`REFERENCE_COLUMNS`, values in percent).

    ``rescaled`` becomes a boolean (``yes``/``true``/``1`` are true). Raises
    :class:`~benchharness.interfaces.DataError` naming the file when it cannot be read or lacks
    a column.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"rescaled": str}, keep_default_na=True)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read the published table: {exc}") from exc
    missing = [c for c in REFERENCE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}")
    df = df.loc[:, list(REFERENCE_COLUMNS)].copy()
    df["rescaled"] = (
        df["rescaled"].fillna("").astype(str).str.strip().str.lower().isin({"yes", "true", "1", "y"})
    )
    for _, _, _, ref_col in COLUMNS:
        df[ref_col] = pd.to_numeric(df[ref_col], errors="coerce").astype(float)
    return df


# ------------------------------------------------------------------------------ aggregation


def _column_of(task, protocol) -> str:
    for label, t, p, _ in COLUMNS:
        if task == t and protocol == p:
            return label
    return f"{task} {protocol}"


def _labels(df: pd.DataFrame) -> pd.Series:
    """Each result's row label: the method, marked ``†`` for a schedule fraction below 1 (``†F``
    when several fractions are present) and ``[data TAG]`` when more than one data identity is.

    Every view labels its rows here, so every view refuses a row that would average results of
    different method or task settings (:func:`benchharness.configurations.check_rows`)."""
    fractions = df["schedule_fraction"] if "schedule_fraction" in df else pd.Series(1.0, index=df.index)
    fractions = pd.to_numeric(fractions, errors="coerce").fillna(1.0)
    partial = sorted({float(f) for f in fractions if f != 1})
    keys = df["data_key"].fillna(UNRECORDED) if "data_key" in df else pd.Series(UNRECORDED, index=df.index)
    tags = df["data_tag"].fillna(UNRECORDED) if "data_tag" in df else keys
    several_data = keys.nunique() > 1
    labels = []
    for method, fraction, tag in zip(df["method"].astype(str), fractions, tags):
        label = method
        if fraction != 1:
            label += " †" if len(partial) == 1 else f" †{fraction:g}"
        if several_data:
            label += f" [data {tag}]"
        labels.append(label)
    labels = pd.Series(labels, index=df.index, dtype=object)
    check_rows(df, labels)
    return labels


def legend(results_df: pd.DataFrame | None) -> list[str]:
    """Legend lines for the row marks of :func:`_labels` (schedule fractions, data tags)."""
    if results_df is None or results_df.empty:
        return []
    notes = []
    fractions = pd.to_numeric(results_df.get("schedule_fraction", pd.Series(dtype=float)),
                              errors="coerce").fillna(1.0)
    partial = sorted({float(f) for f in fractions if f != 1})
    if len(partial) == 1:
        notes.append(f"† schedule fraction {partial[0]:g}: every iteration and epoch count scaled by "
                     "it (run --schedule-fraction); not the full protocol, kept apart from full runs.")
    elif partial:
        notes.append("†F schedule fraction F: every iteration and epoch count scaled by F (run "
                     "--schedule-fraction); not the full protocol, kept apart from full runs.")
    if "data_key" in results_df and results_df["data_key"].fillna(UNRECORDED).nunique() > 1:
        seen = results_df.drop_duplicates("data_key")
        described = [f"{tag} = {root or 'not recorded'}" for tag, root in
                     sorted(zip(seen["data_tag"].fillna(UNRECORDED), seen["data_root"]))]
        notes.append("Data (results of different data are separate rows): " + "; ".join(described) + ".")
    return notes


def summarize(results_df: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, method, column, metric) with ``mean``, ``std``, ``n``, ``n_failed``.

    ``method`` is the row label (see :func:`_labels`): results at another schedule fraction or
    of other data get rows of their own.

    ``std`` is the sample std (ddof=1), NaN for a single seed. A job counts as failed when its
    status is not ``ok`` or it has no value; failures are counted per (group, method, column) and
    reported on each metric row of that cell (a cell with only failures has one row, metric None).
    """
    out_cols = ["group", "method", "column", "task", "protocol", "metric",
                "mean", "std", "n", "n_failed"]
    if results_df is None or results_df.empty:
        return pd.DataFrame(columns=out_cols)
    df = results_df.copy()
    df["group"] = df["group"].where(df["group"].notna(), "unknown").astype(str)
    df["method"] = _labels(df)
    df["column"] = [_column_of(t, p) for t, p in zip(df["task"], df["protocol"])]
    df["ok"] = (df["status"] == "ok") & df["value"].notna()
    rows = []
    for (group, method, column), cell in df.groupby(["group", "method", "column"], sort=False):
        task, protocol = cell["task"].iloc[0], cell["protocol"].iloc[0]
        n_failed = int((~cell["ok"]).sum())
        ok = cell[cell["ok"]]
        base = dict(group=group, method=method, column=column, task=task, protocol=protocol,
                    n_failed=n_failed)
        if ok.empty:
            rows.append({**base, "metric": None, "mean": math.nan, "std": math.nan, "n": 0})
            continue
        metrics = ok["metric"].where(ok["metric"].notna(), "?").astype(str)
        for metric, part in ok.groupby(metrics, sort=True):
            values = part["value"].astype(float)
            n = len(values)
            rows.append({
                **base,
                "metric": metric,
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if n >= 2 else math.nan,
                "n": n,
            })
    return pd.DataFrame(rows, columns=out_cols)


# ----------------------------------------------------------------------------- table model


@dataclass
class _Cell:
    text: str = ""  # raw text, may contain the _PM placeholder
    best: bool = False


@dataclass
class _Row:
    group: str
    method: str
    source: str
    published: bool
    rescaled: bool
    cells: dict[str, _Cell] = field(default_factory=dict)


def _group_key(group: str) -> tuple[int, str]:
    return (GROUPS.index(group), "") if group in GROUPS else (len(GROUPS), group)


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def typical_seeds(summary: pd.DataFrame) -> int:
    """The most common number of successful seeds of the cells of a :func:`summarize` frame
    (the larger one on a tie); 0 when no cell has one."""
    ok_n = [int(n) for n in summary["n"] if n > 0]
    return max(Counter(ok_n).items(), key=lambda kv: (kv[1], kv[0]))[0] if ok_n else 0


def cell_text(cell: pd.DataFrame, typical_n: int) -> str:
    """One cell's text from its :func:`summarize` rows (one per metric id): ``mean`` or ``mean
    ± std``, ``(n=k)`` when k differs from ``typical_n``, ``[metric]`` when several metric ids
    share the cell, ``(k failed)``; ``failed`` when no seed succeeded. The ± is the format-neutral
    placeholder that rendering replaces."""
    ok = cell[cell["n"] > 0]
    n_failed = int(cell["n_failed"].iloc[0])
    parts = []
    for _, r in ok.iterrows():
        text = _fmt(r["mean"]) if r["n"] == 1 else f"{_fmt(r['mean'])} {_PM} {_fmt(r['std'])}"
        if r["n"] != typical_n:
            text += f" (n={int(r['n'])})"
        if len(ok) > 1:
            text += f" [{r['metric']}]"
        parts.append(text)
    if not parts:
        return "failed"
    return "; ".join(parts) + (f" ({n_failed} failed)" if n_failed else "")


def table_results(results_df: pd.DataFrame | None) -> pd.DataFrame:
    """The results of the transfer table: all but the layer-wise ones
    (:mod:`benchharness.layer_protocols`), which ``--view layers`` shows."""
    if results_df is None or results_df.empty:
        return pd.DataFrame() if results_df is None else results_df
    return results_df[[not is_layer_protocol(p) for p in results_df["protocol"]]]


def _layer_note(results_df: pd.DataFrame | None) -> list[str]:
    if results_df is None or results_df.empty:
        return []
    n = sum(is_layer_protocol(p) for p in results_df["protocol"])
    return [f"{n} layer-wise result(s) (protocols conv1..fc7, probe-*, knn-*) are not in this table: "
            "see `benchharness leaderboard --view layers`."] if n else []


def _build(results_df: pd.DataFrame | None, reference_df: pd.DataFrame | None):
    """Rows, column labels and footnote lines shared by every text format (layer-wise results
    left out, with a note saying so)."""
    layer_note = _layer_note(results_df)
    results_df = table_results(results_df)
    summary = summarize(results_df)
    standard = [c[0] for c in COLUMNS]
    extra = sorted(set(summary["column"]) - set(standard))
    columns = standard + extra

    typical_n = typical_seeds(summary)

    # metric ids per column over measured results
    col_metrics: dict[str, list[str]] = {}
    for column in columns:
        ms = summary.loc[(summary["column"] == column) & (summary["n"] > 0), "metric"]
        col_metrics[column] = sorted(set(ms))

    rows: list[_Row] = []
    measured: dict[tuple[str, str], _Row] = {}
    for (group, method), part in summary.groupby(["group", "method"], sort=False):
        row = _Row(group=group, method=method, source="measured", published=False, rescaled=False)
        for column, cell in part.groupby("column", sort=False):
            row.cells[column] = _Cell(cell_text(cell, typical_n))
        measured[(group, method)] = row

    # best per column among measured single-metric cells
    for column in columns:
        if len(col_metrics[column]) != 1:
            continue
        cand = summary[(summary["column"] == column) & (summary["n"] > 0)]
        counts = cand.groupby(["group", "method"]).size()
        single = [k for k, v in counts.items() if v == 1]
        if not single:
            continue
        means = {k: round(float(cand[(cand["group"] == k[0]) & (cand["method"] == k[1])]["mean"].iloc[0]), 1)
                 for k in single}
        top = max(means.values())
        for k, v in means.items():
            if v == top:
                measured[k].cells[column].best = True

    published: list[_Row] = []
    if reference_df is not None:
        for _, r in reference_df.iterrows():
            label = str(r["method"])
            if bool(r["rescaled"]):
                label += " (rescaled)"
            label += f" [published: {r['source']}]"
            row = _Row(group=str(r["group"]), method=label, source=str(r["source"]),
                       published=True, rescaled=bool(r["rescaled"]))
            for column, _, _, ref_col in COLUMNS:
                value = r[ref_col]
                row.cells[column] = _Cell("" if pd.isna(value) else _fmt(float(value)))
            published.append(row)

    groups = sorted({r.group for r in measured.values()} | {r.group for r in published}, key=_group_key)
    for group in groups:
        rows.extend(sorted((r for r in measured.values() if r.group == group), key=lambda r: r.method))
        rows.extend(r for r in published if r.group == group)

    notes = legend(results_df) + layer_note
    described = [f"{c}: {', '.join(m)}" + (" (mixed; best not marked)" if len(m) > 1 else "")
                 for c, m in col_metrics.items() if m]
    if described:
        notes.append("Metric per column (measured): " + "; ".join(described) + ".")
    if typical_n:
        seeds = "seed" if typical_n == 1 else "seeds"
        notes.append(
            f"Measured cells: mean {_PM} sample std (ddof=1) over {typical_n} {seeds}"
            " unless marked (n=k); one seed shows the value alone; best measured value per"
            " column in bold."
        )
    if published:
        notes.append(
            "Published rows (not ranked, values as printed): cls = " + PUBLISHED_METRICS["cls"]
            + "; det = " + PUBLISHED_METRICS["det"] + "; seg = " + PUBLISHED_METRICS["seg"]
            + "; (rescaled) = data-dependent rescaling of Krahenbuhl et al. before fine-tuning."
        )
    return rows, columns, notes


# ------------------------------------------------------------------------------- rendering

def _escape(text: str, fmt: str) -> str:
    if fmt == "latex":
        return latex.escape(text).replace(_PM, r"$\pm$")
    if fmt == "html":
        return html.escape(text, quote=False).replace(_PM, "±")
    return text.replace("|", r"\|").replace(_PM, "±")


def _bold(text: str, fmt: str) -> str:
    if not text:
        return text
    return {"markdown": f"**{text}**", "latex": rf"\textbf{{{text}}}", "html": f"<b>{text}</b>"}[fmt]


def _csv(rows: list[_Row], results_df, reference_df) -> str:
    summary = summarize(table_results(results_df))
    best = {(r.group, r.method, c) for r in rows if not r.published for c, cell in r.cells.items() if cell.best}
    records = []
    for _, s in summary.iterrows():
        records.append(dict(
            group=s["group"], method=s["method"], source="measured", published=False, rescaled=False,
            column=s["column"], task=s["task"], protocol=s["protocol"], metric=s["metric"],
            mean=s["mean"], std=s["std"], n=int(s["n"]), n_failed=int(s["n_failed"]),
            best=(s["group"], s["method"], s["column"]) in best and s["n"] > 0,
        ))
    if reference_df is not None:
        for _, r in reference_df.iterrows():
            for column, task, protocol, ref_col in COLUMNS:
                if pd.isna(r[ref_col]):
                    continue
                kind = column.split()[0]
                records.append(dict(
                    group=r["group"], method=r["method"], source=r["source"], published=True,
                    rescaled=bool(r["rescaled"]), column=column, task=task, protocol=protocol,
                    metric=f"published: {PUBLISHED_METRICS[kind]}", mean=float(r[ref_col]),
                    std=math.nan, n=pd.NA, n_failed=pd.NA, best=False,
                ))
    cols = ["group", "method", "source", "published", "rescaled", "column", "task", "protocol",
            "metric", "mean", "std", "n", "n_failed", "best"]
    df = pd.DataFrame(records, columns=cols)
    if not df.empty:
        df = df.assign(_g=df["group"].map(_group_key), _p=df["published"]).sort_values(
            ["_g", "_p", "method", "column"], kind="stable").drop(columns=["_g", "_p"])
    return df.to_csv(index=False)


def render(
    results_df: pd.DataFrame | None,
    reference_df: pd.DataFrame | None = None,
    fmt: str = "markdown",
) -> str:
    """The leaderboard as text: ``markdown`` (GitHub table), ``latex``, ``html`` or ``csv``.

    ``results_df`` comes from :func:`load_results` (it may be empty or None), ``reference_df``
    from :func:`load_reference`. Text formats end with footnote lines naming each column's
    metric id(s); see the module docstring for how cells, best values and published rows read.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    rows, columns, notes = _build(results_df, reference_df)
    if fmt == "csv":
        return _csv(rows, results_df, reference_df)

    if fmt == "latex":
        return _latex(rows, columns, notes)
    headers = ["group", "method", "source", *columns]
    body = []
    for r in rows:
        line = [_escape(r.group, fmt), _escape(r.method, fmt), _escape(r.source, fmt)]
        for column in columns:
            cell = r.cells.get(column, _Cell())
            text = _escape(cell.text, fmt)
            line.append(_bold(text, fmt) if cell.best else text)
        body.append(line)
    headers = [_escape(h, fmt) for h in headers]
    tablefmt = {"markdown": "github", "html": "unsafehtml"}[fmt]
    table = tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True)
    notes = [_escape(n, fmt) for n in notes]
    if fmt == "html":
        return table + "\n" + "".join(f"<p>{n}</p>\n" for n in notes)
    return table + "\n" + "".join(f"\n{n}\n" for n in notes)


def column_header(column: str) -> tuple[str, str]:
    """A column's two header levels in LaTeX: ``("Classification", "fc8")`` for ``cls fc8``,
    ``("Detection", "all")``, ``("Segmentation", "all")``; ``(task, protocol)`` for others."""
    if column in HEADERS:
        return HEADERS[column]
    task, _, protocol = column.partition(" ")
    return task, protocol


def _latex(rows: list[_Row], columns: list[str], notes: list[str]) -> str:
    """Table 5.3's shape: group label once per block, ``\\midrule`` between groups, the two-level
    header of :func:`column_header`, the notes in the caption (see :mod:`benchharness.latex`)."""
    blocks: list[latex.Block] = []
    for r in rows:
        if not blocks or blocks[-1].label != _escape(r.group, "latex"):
            blocks.append(latex.Block(_escape(r.group, "latex")))
        cells = [_escape(r.method, "latex")]
        for column in columns:
            cell = r.cells.get(column, _Cell())
            text = _escape(cell.text, "latex")
            cells.append(_bold(text, "latex") if cell.best else text)
        blocks[-1].rows.append(cells)
    caption = " ".join(["Transfer to PASCAL VOC (\\%)."] + [_escape(n, "latex") for n in notes])
    return latex.booktabs(["Group", "Method"], [column_header(c) for c in columns], blocks,
                          caption=caption, label="tab:benchharness-transfer",
                          comments=["benchharness leaderboard --format latex; needs \\usepackage{booktabs}"])
