"""``leaderboard --format latex``: a booktabs table shaped like Table 5.3, which pdflatex compiles."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from benchharness.latex import Block, booktabs, escape
from benchharness.leaderboard import REFERENCE_CSV, load_reference, load_results, render

from test_leaderboard import write_result


@pytest.fixture
def results(tmp_path):
    w = write_result
    w(tmp_path, "s0.json", method="supervised", group="sup", protocol="fc8", value=70.0, seed=0)
    w(tmp_path, "s1.json", method="supervised", group="sup", protocol="fc8", value=72.0, seed=1)
    w(tmp_path, "sd.json", method="supervised", group="sup", task="voc07-det", protocol="all",
      value=55.5)
    w(tmp_path, "c0.json", method="ctx_pred & 50%", group="self-sup", protocol="all", value=60.0)
    w(tmp_path, "c1.json", method="color#2", group="self-sup", task="voc12-seg", protocol="all",
      metric="miou", value=33.3)
    w(tmp_path, "b0.json", method="bigan", group="unsup", protocol="fc6-8", value=44.0,
      schedule_fraction=0.5)
    w(tmp_path, "r0.json", method="random", group="none", task="coco-cls", protocol="fc8", value=9.0)
    return load_results(tmp_path)


def test_escape():
    assert escape("a_b % & # $ {x} ~ ^ \\ < > ±†") == (
        r"a\_b \% \& \# \$ \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} "
        r"\textless{} \textgreater{} $\pm$\dag{}")


def test_table_5_3_shape(results):
    out = render(results, load_reference(REFERENCE_CSV), fmt="latex")
    lines = out.splitlines()
    assert lines[0].startswith("% ") and "booktabs" in lines[0]
    assert lines[1] == r"\begin{table}" and lines[-1] == r"\end{table}"
    body = out[out.index(r"\begin{tabular}"):out.index(r"\end{tabular}")]
    # Group, Method, the 3 cls + det + seg columns, then coco-cls fc8
    assert r"\begin{tabular}{llcccccc}" in out
    assert body.count(r"\toprule") == 1 and body.count(r"\bottomrule") == 1
    header = lines[lines.index(r"\toprule") + 1]
    assert header == (r" &  & \multicolumn{3}{c}{Classification} & Detection & Segmentation & coco-cls \\")
    assert lines[lines.index(r"\toprule") + 2] == (
        r"\cmidrule(lr){3-5} \cmidrule(lr){6-6} \cmidrule(lr){7-7} \cmidrule(lr){8-8}")
    assert lines[lines.index(r"\toprule") + 3] == r"Group & Method & fc8 & fc6-8 & all & all & all & fc8 \\"
    # one block per group, in order, the label on its first row only, \midrule between blocks
    rows = lines[lines.index(r"\toprule") + 5:lines.index(r"\bottomrule")]
    labels = [r.split(" & ")[0] for r in rows if r != r"\midrule"]
    assert [x for x in labels if x] == ["sup", "self-sup", "unsup", "none"]
    assert sum(r == r"\midrule" for r in rows) == 3
    blocks = "\n".join(rows).split(r"\midrule")
    assert all(b.strip().splitlines()[0].split(" & ")[0] for b in blocks)
    assert all(not line.split(" & ")[0] for b in blocks for line in b.strip().splitlines()[1:])
    # cells, bold best, escaping, published rows inside their group
    assert r"\textbf{71.0 $\pm$ 1.4 (n=2)}" in out
    assert r"ctx\_pred \& 50\%" in out and r"color\#2" in out
    assert r"bigan \dag{}" in out
    assert r"[published: donahue2017\_thesis]" in out
    # the notes are in the caption, nothing follows the table
    caption = next(line for line in lines if line.startswith(r"\caption{"))
    assert "Metric per column" in caption and "Published rows" in caption and "schedule fraction" in caption
    assert out.rstrip().endswith(r"\end{table}")
    assert out.count("{") == out.count("}")


def test_empty_and_blocks():
    out = booktabs(["Group", "Method"], [("", "a"), ("", "b")], [Block("g", []), Block("h", [["m", "1"]])])
    assert r"\begin{tabular}{llcc}" in out and r"\cmidrule" not in out
    assert "h & m & 1 &  \\\\" in out and r"\midrule" in out and out.count(r"\midrule") == 1


def _compile(tmp_path, table: str) -> None:
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex is not installed (the table's structure is checked by the other tests)")
    (tmp_path / "t.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n"
                                    "\\begin{document}\n" + table + "\\end{document}\n", encoding="utf-8")
    done = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "t.pdf").stat().st_size > 0
    assert not re.search(r"Missing character|Undefined control sequence", done.stdout)


def test_pdflatex_compiles_it(tmp_path, results):
    _compile(tmp_path, render(results, load_reference(REFERENCE_CSV), fmt="latex"))


def test_pdflatex_compiles_the_views(tmp_path, results):
    from benchharness.leaderboard_views import render_cost, render_per_class

    _compile(tmp_path, render_per_class(results, "latex") + render_cost(results, "latex"))
