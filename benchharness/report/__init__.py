"""``benchharness report``: one self-contained HTML page about a results store.

:func:`build_report` gathers each section's numbers (:mod:`.sections`), draws the figures
(:mod:`.figures`, PNG embedded as ``data:`` URIs), computes precision-recall curves from the
exported predictions (:mod:`.curves`) and fills ``template.html.j2`` with jinja2. The page
fetches nothing: styles and its few lines of script are inline, so it opens offline and can be
mailed as one file.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from .. import __version__
from .. import leaderboard as lb
from .. import leaderboard_layers
from ..interfaces import BenchharnessError, DataError
from . import figures, sections
from .curves import NoCurveKind, pr_curves

TEMPLATE = "template.html.j2"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _pr_section(records: list[dict], means: dict, pr_methods: list[str] | None,
                data_root: Path | None) -> tuple[list[dict], list[str]]:
    """Per column, the picked methods' curves as one figure (or why there is none), and the
    columns whose predictions have no such curve (segmentation, single-label top-k)."""
    out, without = [], []
    for column in sections._ordered_columns(means):
        picks = sections.pick_methods(means[column], pr_methods)
        entry = dict(column=column, methods=picks, figure=None, notes=[])
        if not picks:
            entry["notes"].append(f"none of {', '.join(pr_methods or [])} has a result in this column")
        curves, classes, kinds = {}, [], set()
        for method in picks:
            result = sections.first_seed(records, column, method)
            try:
                kind, by_class = pr_curves(result, result["path"], data_root)
            except NoCurveKind:
                kinds.add("seg")
                continue
            except (BenchharnessError, DataError, ValueError) as exc:
                entry["notes"].append(f"{method}: no curve, {exc}")
                continue
            curves[f"{method} (seed {result.get('seed')}, {result.get('metric')} "
                   f"{float(result['value']):.1f})"] = by_class
            classes = classes or list(by_class)
        if kinds and not curves and not entry["notes"]:
            without.append(column)
            continue
        if curves:
            entry["figure"] = _data_uri(figures.pr_grid(curves, classes,
                                                        f"{column}: precision-recall per class"))
        out.append(entry)
    return out, without


def build_report(results_dir: Path | str, reference: bool = False, suite: str | None = None,
                 pr_methods: list[str] | None = None, data_root: Path | str | None = None,
                 reference_path: Path | str | None = None,
                 layers_reference_path: Path | str | None = None) -> str:
    """The report of the results under ``results_dir`` as one HTML string.

    ``reference`` adds the published rows (``reference_path``, default the CSV of
    :data:`benchharness.leaderboard.REFERENCE_CSV`; the layer-wise ones from
    ``layers_reference_path``, default :data:`benchharness.leaderboard_layers.LAYERS_CSV`); ``suite`` keeps that suite's results only;
    ``pr_methods`` names the methods (row labels) whose precision-recall curves are drawn
    (default: best and worst of each column); ``data_root`` overrides the data each result
    recorded, for curves of a store whose data has moved. Raises :class:`BenchharnessError`
    when there is nothing to report.
    """
    results_dir = Path(results_dir)
    df = lb.load_results(results_dir)
    if suite is not None and not df.empty:
        df = df[df["suite"] == suite].reset_index(drop=True)
    ref = lb.load_reference(reference_path or lb.REFERENCE_CSV) if reference else None
    if df.empty and ref is None:
        raise BenchharnessError(f"no results under {results_dir / 'runs'}; run `benchharness run` first")
    records = sections.read_records(df)
    board = sections.leaderboard(df, ref)

    heatmaps = [dict(column=column, frame=frame,
                     figure=_data_uri(figures.per_class_heatmap(frame, f"{column}: per-class value (%)")))
                for column, frame in sections.per_class(records).items()]
    means = sections.column_means(records)
    pr, no_curve = _pr_section(records, means, pr_methods,
                               Path(data_root) if data_root is not None else None)
    layer_ref = (leaderboard_layers.load_layer_reference(layers_reference_path or leaderboard_layers.LAYERS_CSV)
                 if reference else None)
    tables = leaderboard_layers.layer_tables(df, layer_ref)
    layers = [dict(table=t, figure=_data_uri(figures.layerwise(t.means, t.title)) if not t.means.empty else None)
              for t in tables]
    points = sections.pretext_points(records)
    point_columns = [c for c in sections._ordered_columns(means) if c in points.columns]
    pretext_figure = (_data_uri(figures.pretext_vs_transfer(points, point_columns))
                      if not points.empty and points["ratio"].notna().any() and point_columns else None)
    cost = sections.cost(records)
    cost_figure = _data_uri(figures.cost_bars(cost)) if cost else None

    env = Environment(loader=PackageLoader("benchharness", "report"),
                      autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    return env.get_template(TEMPLATE).render(
        title=f"benchharness report: {results_dir.resolve().name}",
        results_dir=str(results_dir.resolve()),
        generated=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        harness_version=__version__,
        suite=suite,
        n_results=len(df),
        board=board,
        heatmaps=heatmaps,
        pr=pr,
        pr_default=not pr_methods,
        no_curve=no_curve,
        layers=layers,
        layer_notes=leaderboard_layers.notes(tables, df) if tables else [],
        points=points.to_dict("records") if not points.empty else [],
        point_columns=point_columns,
        pretext_figure=pretext_figure,
        cost=cost,
        cost_figure=cost_figure,
        provenance=sections.provenance(records),
    )


def _num(value, digits: int = 1) -> str:
    """A number with ``digits`` decimals; an empty string for None/NaN."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return f"{float(value):.{digits}f}"


def write_report(out: Path | str, results_dir: Path | str, **options) -> Path:
    """Write :func:`build_report` to ``out`` (parents created); returns the path."""
    from ..atomic import write_bytes

    page = build_report(results_dir, **options)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, page.encode("utf-8"))
    out.chmod(0o644)  # the atomic writer's temporary file is private; a report is meant to be shared
    return out

