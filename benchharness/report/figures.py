"""The report's figures, drawn with matplotlib and returned as PNG bytes.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state, no GUI
backend), so drawing them needs no display and leaves the caller's matplotlib setup alone.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

DPI = 96


def _png(fig: Figure, tight: bool = True) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight" if tight else None)
    return buffer.getvalue()


def per_class_heatmap(frame: pd.DataFrame, title: str) -> bytes:
    """Methods (rows) x classes (columns) as a heat map, each cell labelled with its value."""
    n_rows, n_cols = frame.shape
    fig = Figure(figsize=(max(6.0, 0.55 * n_cols + 2.5), max(2.0, 0.42 * n_rows + 1.6)))
    ax = fig.add_subplot()
    values = frame.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto",
                      vmin=np.nanmin(values) if np.isfinite(values).any() else 0,
                      vmax=np.nanmax(values) if np.isfinite(values).any() else 1)
    ax.set_xticks(range(n_cols), labels=list(frame.columns), rotation=50, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), labels=list(frame.index), fontsize=8)
    lo, hi = image.get_clim()
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            if math.isnan(v):
                continue
            light = (v - lo) / (hi - lo) > 0.6 if hi > lo else False
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                    color="black" if light else "white")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01)
    return _png(fig)


def pr_grid(curves: dict[str, dict], classes: list[str], title: str) -> bytes:
    """One small panel per class, one precision-recall line per method.

    ``curves`` maps a method to ``{class: Curve}`` (see :mod:`benchharness.report.curves`).
    """
    n_cols = 5
    n_rows = max(1, math.ceil(len(classes) / n_cols))
    fig = Figure(figsize=(2.5 * n_cols, 2.1 * n_rows + 0.6))
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=True, sharey=True)
    colours = ["tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple", "tab:brown"]
    for k, ax in enumerate(axes.flat):
        if k >= len(classes):
            ax.axis("off")
            continue
        name = classes[k]
        for m, (method, by_class) in enumerate(curves.items()):
            curve = by_class.get(name)
            if curve is None or curve.n_pos == 0 or len(curve.recall) == 0:
                continue
            rec = np.concatenate(([0.0], curve.recall))
            prec = np.concatenate(([curve.precision[0]], curve.precision))
            ax.plot(rec, prec, color=colours[m % len(colours)], linewidth=1.1,
                    label=method if k == 0 else None, drawstyle="steps-post")
        ax.set_title(name, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xticks([0, 0.5, 1], labels=["0", "0.5", "1"])
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("recall", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("precision", fontsize=8)
    # fixed margins: tight_layout on twenty panels costs seconds per figure
    top = 1 - 0.75 / (2.1 * n_rows + 0.6)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.55 / (2.1 * n_rows + 0.6), top=top,
                        wspace=0.12, hspace=0.3)
    fig.legend(loc="lower center", ncol=len(curves), fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, top + 0.2 / (2.1 * n_rows + 0.6)))
    fig.suptitle(title, fontsize=10, y=0.995)
    return _png(fig, tight=False)


def layerwise(frame: pd.DataFrame, title: str) -> bytes:
    """Methods as lines over the layers (columns of ``frame``), in network order."""
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    x = np.arange(frame.shape[1])
    for method, values in frame.iterrows():
        ax.plot(x, values.to_numpy(dtype=float), marker="o", label=str(method))
    ax.set_xticks(x, labels=list(frame.columns))
    ax.set_xlabel("layer")
    ax.set_ylabel("value (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def pretext_vs_transfer(points: pd.DataFrame, columns: list[str]) -> bytes:
    """One panel per leaderboard column: pretext figure relative to chance (x, log scale)
    against the column's transfer value (y), one labelled point per method."""
    columns = columns or ["(none)"]
    n_cols = min(3, len(columns))
    n_rows = math.ceil(len(columns) / n_cols)
    fig = Figure(figsize=(4.2 * n_cols, 3.6 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False).flat
    for ax in list(axes)[len(columns):]:
        ax.axis("off")
    have = points[points["ratio"].notna()] if "ratio" in points else points.iloc[0:0]
    for ax, column in zip(fig.axes, columns):
        part = have[have[column].notna()] if column in have else have.iloc[0:0]
        ax.scatter(part["ratio"].astype(float), part[column].astype(float) if column in part else [],
                   color="tab:blue", zorder=3)
        for _, r in part.iterrows():
            ax.annotate(str(r["method"]), (float(r["ratio"]), float(r[column])), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xscale("log")
        ax.set_xlabel("pretext / chance (x, log)", fontsize=8)
        ax.set_ylabel(f"{column} (%)", fontsize=8)
        ax.set_title(column, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def cost_bars(rows: list[dict]) -> bytes:
    """Wall time per method in minutes: pretraining and transfer, stacked horizontal bars."""
    methods = [r["method"] for r in rows]
    pre = np.array([(r["pretrain_s"] or 0.0) / 60 for r in rows])
    trans = np.array([(r["transfer_s"] or 0.0) / 60 for r in rows])
    fig = Figure(figsize=(7.0, 0.35 * len(rows) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    ax.barh(y, pre, color="tab:blue", label="pretraining")
    ax.barh(y, trans, left=pre, color="tab:orange", label="transfer (all jobs)")
    ax.set_yticks(y, labels=methods, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("wall time (minutes)")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)
