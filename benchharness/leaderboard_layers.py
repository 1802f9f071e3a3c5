"""``leaderboard --view layers``: Table 5.2's shape, one column per layer, one row per method.

One table per task and protocol family (:mod:`benchharness.layer_protocols`): ``voc07-cls``
under ``probe-<layer>`` (linear SVM mAP), a source-classification task under ``<layer>``
(Table 5.2's top-1 with conv1..<layer> frozen), ``knn-<layer>`` protocols; columns in network
order (conv1 < ... < conv5 < fc6 < fc7). Measured cells read as the transfer table's
(:func:`benchharness.leaderboard.cell_text`: mean ± sample std over seeds, ``(n=k)``,
``failed``), best measured value per column in bold.

Published rows (``--reference``) come from ``results/reference/published_layers.csv``
(:func:`load_layer_reference`), labelled ``<method> [published: <source>]``, after the measured
rows of their group. A published table joins the measured one it stands for: ImageNet's
``imagenet-source-cls`` (Donahue 2017, Table 5.2) the ``source-cls`` task (the synthetic
world's source set stands in for ImageNet), a ``linear svm`` classifier the ``probe`` family,
``retrain rest`` the bare layer names. Owens et al.'s ``pool5`` column goes to ``conv5``: the
``probe-conv5`` features are the conv5 stage's output, which ends with that max-pool; their
``max5`` keeps a column of its own.

:func:`layer_tables` is the one place results become these tables: the leaderboard view and the
report's layer-wise section (:mod:`benchharness.report`) both read it.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from . import latex
from . import leaderboard as lb
from .interfaces import DataError
from .layer_protocols import FAMILIES, layer_key, layer_of

LAYERS_CSV = lb.REFERENCE_CSV.with_name("published_layers.csv")
"""Where the published layer-wise numbers live in a source checkout."""

PUBLISHED_LAYER_COLUMNS = ("conv1", "conv2", "conv3", "conv4", "conv5", "max5", "pool5", "fc6", "fc7")
LAYER_REFERENCE_COLUMNS = ("source", "table", "method", "group", "task", "metric", "classifier",
                           *PUBLISHED_LAYER_COLUMNS)

PUBLISHED_TASKS = {"imagenet-source-cls": "source-cls"}
"""A published task -> the measured task that stands for it (the others keep their name)."""

PUBLISHED_FAMILIES = {"retrain rest": "", "linear svm": "probe", "knn": "knn"}
"""A published ``classifier`` -> the protocol family it corresponds to."""


@dataclass
class LayerRow:
    """One row of a layer table: its cells' texts (by layer), best marks, and the numbers."""

    group: str
    method: str
    source: str
    published: bool
    cells: dict[str, str] = field(default_factory=dict)
    best: set[str] = field(default_factory=set)
    values: dict[str, float] = field(default_factory=dict)  # mean per layer (single-metric cells)
    metrics: dict[str, str] = field(default_factory=dict)  # metric id(s) per layer
    note: str = ""  # a published row's note (the CSV's ``note`` column)


@dataclass
class LayerTable:
    """One task's table under one protocol family."""

    task: str
    family: str
    layers: list[str]
    rows: list[LayerRow]
    metrics: list[str]  # measured metric ids, then the published metrics

    @property
    def title(self) -> str:
        """``voc07-cls, protocols probe-<layer>``."""
        return f"{self.task}, protocols {self.family + '-' if self.family else ''}<layer>"

    @property
    def means(self) -> pd.DataFrame:
        """Measured rows x layers: the mean over successful seeds (NaN where none); what the
        report's figure draws."""
        measured = [r for r in self.rows if not r.published]
        return pd.DataFrame([[r.values.get(c, math.nan) for c in self.layers] for r in measured],
                            index=[r.method for r in measured], columns=self.layers, dtype=float)


def load_layer_reference(path: Path | str = LAYERS_CSV) -> pd.DataFrame:
    """The published layer-wise numbers (:data:`LAYER_REFERENCE_COLUMNS`, values in percent, and
    the optional ``note``).
    Raises :class:`~benchharness.interfaces.DataError` naming the file when it cannot be read,
    lacks a column, or a row gives both ``conv5`` and ``pool5`` (they share a column)."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read the published layer table: {exc}") from exc
    missing = [c for c in LAYER_REFERENCE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}")
    df = df.loc[:, [*LAYER_REFERENCE_COLUMNS, *(["note"] if "note" in df.columns else [])]].copy()
    df["note"] = df["note"].fillna("").astype(str) if "note" in df.columns else ""
    for column in PUBLISHED_LAYER_COLUMNS:
        df[column] = pd.to_numeric(df[column], errors="coerce").astype(float)
    both = df["conv5"].notna() & df["pool5"].notna()
    if both.any():
        first = df[both].iloc[0]
        raise DataError(path, f"row {first['method']!r} ({first['source']}) gives both conv5 and "
                              "pool5; the layer table has one conv5 column")
    return df


def _published_rows(reference_df: pd.DataFrame | None):
    """((task, family), LayerRow, metric text) per published row."""
    if reference_df is None:
        return []
    out = []
    for _, r in reference_df.iterrows():
        task = PUBLISHED_TASKS.get(str(r["task"]), str(r["task"]))
        family = PUBLISHED_FAMILIES.get(str(r["classifier"]).strip().lower(), str(r["classifier"]))
        row = LayerRow(group=str(r["group"]), method=f"{r['method']} [published: {r['source']}]",
                       source=str(r["source"]), published=True, note=str(r["note"]).strip())
        for column in PUBLISHED_LAYER_COLUMNS:
            value = r[column]
            if not pd.isna(value):
                layer = "conv5" if column == "pool5" else column
                row.cells[layer] = lb._fmt(float(value))
                row.values[layer] = float(value)
        metric = f"{r['metric']} ({r['classifier']}; {r['table']}, task {r['task']})"
        row.metrics = {layer: f"published: {metric}" for layer in row.cells}
        out.append(((task, family), row, metric))
    return out


def layer_tables(results_df: pd.DataFrame | None,
                 reference_df: pd.DataFrame | None = None) -> list[LayerTable]:
    """The layer tables of the layer-wise results in ``results_df`` (from
    :func:`benchharness.leaderboard.load_results`) and, with ``reference_df`` (from
    :func:`load_layer_reference`), the published rows: sorted by task and family; rows by
    supervision group, measured before published, methods alphabetically."""
    results = results_df if results_df is not None else pd.DataFrame()
    if not results.empty:
        results = results[[layer_of(p) is not None for p in results["protocol"]]]
    summary = lb.summarize(results)
    typical_n = lb.typical_seeds(summary)
    tables: dict[tuple[str, str], dict] = {}

    def table(key):
        return tables.setdefault(key, {"rows": {}, "published": [], "metrics": [], "ref_metrics": []})

    for (group, method, task, protocol), cell in summary.groupby(
            ["group", "method", "task", "protocol"], sort=False):
        family, layer = layer_of(protocol)
        t = table((task, family))
        row = t["rows"].setdefault((group, method), LayerRow(group, method, "measured", False))
        row.cells[layer] = lb.cell_text(cell, typical_n).replace(lb._PM, "±")
        ok = cell[cell["n"] > 0]
        if len(ok) == 1:
            row.values[layer] = float(ok["mean"].iloc[0])
        row.metrics[layer] = "; ".join(str(m) for m in ok["metric"])
        t["metrics"].extend(m for m in ok["metric"] if m not in t["metrics"])
    for key, row, metric in _published_rows(reference_df):
        t = table(key)
        t["published"].append(row)
        if metric not in t["ref_metrics"]:
            t["ref_metrics"].append(metric)

    out = []
    for (task, family), t in sorted(tables.items(), key=lambda kv: (kv[0][0], _family_key(kv[0][1]))):
        measured = list(t["rows"].values())
        if len(t["metrics"]) == 1:
            _mark_best(measured)
        groups = sorted({r.group for r in measured} | {r.group for r in t["published"]}, key=lb._group_key)
        rows = []
        for group in groups:
            rows.extend(sorted((r for r in measured if r.group == group), key=lambda r: r.method))
            rows.extend(r for r in t["published"] if r.group == group)
        layers = sorted({c for r in rows for c in r.cells}, key=layer_key)
        out.append(LayerTable(task, family, layers, rows, t["metrics"] + t["ref_metrics"]))
    return out


def _family_key(family: str) -> tuple[int, str]:
    return (FAMILIES.index(family), "") if family in FAMILIES else (len(FAMILIES), family)


def _mark_best(rows: list[LayerRow]) -> None:
    """Bold the best measured value of each layer (one decimal, ties all marked)."""
    for layer in {c for r in rows for c in r.values}:
        values = {id(r): round(r.values[layer], 1) for r in rows if layer in r.values}
        top = max(values.values())
        for r in rows:
            if values.get(id(r)) == top:
                r.best.add(layer)


def notes(tables: list[LayerTable], results_df: pd.DataFrame | None) -> list[str]:
    """The lines under the tables: row legends, what a cell holds, the conv5 / pool5 reading."""
    lines = lb.legend(results_df)
    if any(not r.published for t in tables for r in t.rows):
        lines.append("Measured cells: mean ± sample std (ddof=1) over seeds (one seed: the value "
                     "alone; (n=k) where the count differs); best measured value per column in bold.")
    if any(r.published for t in tables for r in t.rows):
        lines.append("Published rows (not ranked, values as printed); Owens et al.'s pool5 column is "
                     "shown under conv5 (probe-conv5 reads conv5's output after its max-pool, pool5); "
                     "max5 = conv5 max-pooled over the whole map (published only).")
    lines.extend(f"{r.method}: {r.note}." for t in tables for r in t.rows if r.published and r.note)
    return lines


def render_layers(results_df: pd.DataFrame | None, reference_df: pd.DataFrame | None = None,
                  fmt: str = "markdown") -> str:
    """The layers view as text: ``markdown`` and ``html`` (a heading and a table per task and
    family), ``latex`` (one booktabs table each) or ``csv`` (long: one line per row and layer)."""
    if fmt not in lb.FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {lb.FORMATS}")
    tables = layer_tables(results_df, reference_df)
    if fmt == "csv":
        return _csv(tables)
    lines = notes(tables, results_df)
    if fmt == "latex":
        return "\n".join(_latex(t, lines) for t in tables)
    out = []
    for t in tables:
        body = [[_escape(r.group, fmt), _escape(r.method, fmt), _escape(r.source, fmt),
                 *(_cell(r, c, fmt) for c in t.layers)] for r in t.rows]
        headers = [_escape(h, fmt) for h in ["group", "method", "source", *t.layers]]
        metric = _escape("Metric: " + "; ".join(t.metrics) + ".", fmt)
        if fmt == "html":
            table = tabulate(body, headers=headers, tablefmt="unsafehtml", disable_numparse=True)
            out.append(f"<h3>{_escape(t.title, fmt)}</h3>\n{table}\n<p>{metric}</p>\n")
        else:
            table = tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
            out.append(f"### {t.title}\n\n{table}\n\n{metric}\n")
    if fmt == "html":
        return "".join(out) + "".join(f"<p>{_escape(n, fmt)}</p>\n" for n in lines)
    return "\n".join(out) + "".join(f"\n{n}\n" for n in lines)


def _escape(text: str, fmt: str) -> str:
    if fmt == "latex":
        return latex.escape(text)
    if fmt == "html":
        return html.escape(str(text), quote=False)
    return str(text).replace("|", r"\|")


def _cell(row: LayerRow, layer: str, fmt: str) -> str:
    """A cell escaped for ``fmt``, bold where it is its column's best."""
    text = _escape(row.cells.get(layer, ""), fmt)
    if layer not in row.best or not text:
        return text
    return {"markdown": f"**{text}**", "html": f"<b>{text}</b>", "latex": rf"\textbf{{{text}}}"}[fmt]


def _latex(t: LayerTable, lines: list[str]) -> str:
    blocks: list[latex.Block] = []
    for r in t.rows:
        if not blocks or blocks[-1].label != latex.escape(r.group):
            blocks.append(latex.Block(latex.escape(r.group)))
        blocks[-1].rows.append([latex.escape(r.method)] + [_cell(r, c, "latex") for c in t.layers])
    caption = " ".join([latex.escape(f"{t.title}. Metric: {'; '.join(t.metrics)}.")]
                       + [latex.escape(n) for n in lines])
    label = f"tab:benchharness-layers-{t.task}-{t.family or 'layer'}"
    return latex.booktabs(["Group", "Method"], [("Layer", c) for c in t.layers], blocks, caption=caption,
                          label=label, comments=["benchharness leaderboard --view layers --format latex; "
                                                 "needs \\usepackage{booktabs}"])


def _csv(tables: list[LayerTable]) -> str:
    records = []
    for t in tables:
        for r in t.rows:
            for layer in t.layers:
                if layer not in r.cells:
                    continue
                records.append(dict(task=t.task, family=t.family, group=r.group, method=r.method,
                                    source=r.source, published=r.published, layer=layer,
                                    metric=r.metrics.get(layer, ""), text=r.cells[layer],
                                    value=r.values.get(layer, math.nan), best=layer in r.best))
    cols = ["task", "family", "group", "method", "source", "published", "layer", "metric", "text",
            "value", "best"]
    return pd.DataFrame(records, columns=cols).to_csv(index=False)
