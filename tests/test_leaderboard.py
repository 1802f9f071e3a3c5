"""benchharness.leaderboard on result files written by hand."""

from __future__ import annotations

import csv

import io
import json
import math
import re

import pandas as pd
import pytest

from benchharness.interfaces import DataError
from benchharness.leaderboard import (
    FORMATS,
    REFERENCE_CSV,
    load_reference,
    load_results,
    render,
    summarize,
)


def write_result(root, name, **fields):
    result = {
        "status": "ok", "error": None, "method": "m", "group": "sup", "task": "voc07-cls",
        "protocol": "fc8", "metric": "voc07-11pt", "value": 50.0, "per_class": {},
        "seed": 0, "suite": "voc-transfer", "config_hash": "abc",
    }
    result.update(fields)
    path = root / "runs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return path


@pytest.fixture
def results_dir(tmp_path):
    # supervised (sup): cls fc8 70, 72 -> 71.0 ± sqrt(2)=1.4 ; cls all 80, 81 -> 80.5 ± sqrt(.5)=0.7
    # bigan (unsup):    cls fc8 40, 44 -> 42.0 ± sqrt(8)=2.8 ; cls all 60 (seed 0), seed 1 failed
    # random (none):    cls fc8 seed 0 failed -> "failed"
    w = write_result
    w(tmp_path, "sup/fc8-0.json", method="supervised", group="sup", protocol="fc8", value=70.0, seed=0)
    w(tmp_path, "sup/fc8-1.json", method="supervised", group="sup", protocol="fc8", value=72.0, seed=1)
    w(tmp_path, "sup/all-0.json", method="supervised", group="sup", protocol="all", value=80.0, seed=0)
    w(tmp_path, "sup/all-1.json", method="supervised", group="sup", protocol="all", value=81.0, seed=1)
    w(tmp_path, "bigan/fc8-0.json", method="bigan", group="unsup", protocol="fc8", value=40.0, seed=0)
    w(tmp_path, "bigan/fc8-1.json", method="bigan", group="unsup", protocol="fc8", value=44.0, seed=1)
    w(tmp_path, "bigan/all-0.json", method="bigan", group="unsup", protocol="all", value=60.0, seed=0)
    w(tmp_path, "bigan/all-1.json", method="bigan", group="unsup", protocol="all", value=None,
      seed=1, status="failed", error="CUDA out of memory")
    w(tmp_path, "random/fc8-0.json", method="random", group="none", protocol="fc8", value=None,
      seed=0, status="failed", error="boom", metric=None)
    (tmp_path / "runs" / "bigan" / "broken.json").write_text('{"status": "ok", "value": ')
    return tmp_path


@pytest.fixture
def results(results_dir):
    with pytest.warns(UserWarning, match="broken.json"):
        return load_results(results_dir)


def table_rows(markdown: str) -> list[list[str]]:
    lines = [l for l in markdown.splitlines() if l.startswith("|")]
    return [[c.strip() for c in l.strip("|").split("|")] for l in lines[2:]]


def test_load_results_skips_corrupt_file(results_dir):
    with pytest.warns(UserWarning, match=re.escape(str(results_dir / "runs" / "bigan" / "broken.json"))):
        df = load_results(results_dir)
    assert len(df) == 9
    assert set(df["method"]) == {"supervised", "bigan", "random"}
    assert df["value"].dtype == float


def test_load_results_empty_dir(tmp_path):
    df = load_results(tmp_path)
    assert df.empty
    assert "value" in df.columns


def test_summary_numbers_by_hand(results):
    s = summarize(results).set_index(["method", "column"])
    assert s.loc[("supervised", "cls fc8"), "mean"] == pytest.approx(71.0)
    assert s.loc[("supervised", "cls fc8"), "std"] == pytest.approx(math.sqrt(2))
    assert s.loc[("supervised", "cls all"), "std"] == pytest.approx(math.sqrt(0.5))
    assert s.loc[("bigan", "cls fc8"), "std"] == pytest.approx(math.sqrt(8))
    assert s.loc[("bigan", "cls all"), "n"] == 1
    assert s.loc[("bigan", "cls all"), "n_failed"] == 1
    assert s.loc[("random", "cls fc8"), "n"] == 0


def test_markdown_table(results):
    md = render(results, fmt="markdown")
    rows = table_rows(md)
    header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    assert header == ["group", "method", "source", "cls fc8", "cls fc6-8", "cls all", "det", "seg"]
    # grouped sup, unsup, none
    assert [r[:2] for r in rows] == [["sup", "supervised"], ["unsup", "bigan"], ["none", "random"]]
    cell = {r[1]: dict(zip(header, r)) for r in rows}
    # best per column in bold
    assert cell["supervised"]["cls fc8"] == "**71.0 ± 1.4**"
    assert cell["supervised"]["cls all"] == "**80.5 ± 0.7**"
    assert cell["bigan"]["cls fc8"] == "42.0 ± 2.8"
    # one seed left: value alone, its n (differs from the usual 2) and the failure marked
    assert cell["bigan"]["cls all"] == "60.0 (n=1) (1 failed)"
    assert cell["random"]["cls fc8"] == "failed"
    assert cell["random"]["cls all"] == "" and cell["supervised"]["det"] == ""
    # metric ids named under the table
    assert "cls fc8: voc07-11pt" in md and "cls all: voc07-11pt" in md


def test_reference_rows_marked_published(results):
    ref = load_reference(REFERENCE_CSV)
    md = render(results, ref, fmt="markdown")
    rows = table_rows(md)
    methods = [r[1] for r in rows]
    groups = [r[0] for r in rows]
    # groups stay in order with published rows inside their group, after the measured ones
    order = ["sup", "self-sup", "unsup", "none"]
    assert [g for i, g in enumerate(groups) if i == 0 or groups[i - 1] != g] == order
    assert methods[0] == "supervised"
    assert methods[1] == "ImageNet (Krizhevsky et al. 2012) [published: donahue2017_thesis]"
    assert rows[1][2] == "donahue2017_thesis"
    assert methods.index("bigan") < methods.index("BiGAN [published: donahue2017_thesis]")
    assert "Donahue et al. (BiGAN) (rescaled) [published: zhang2017_splitbrain]" in methods
    assert groups[methods.index("random")] == "none"
    assert methods[-1] == "Gaussian (random init) [published: zhang2017_splitbrain]"
    # published numbers are shown but never ranked: 77.0 > 71.0 yet supervised stays best
    assert rows[1][3] == "77.0"
    assert rows[0][3] == "**71.0 ± 1.4**"
    assert sum("**" in c for r in rows for c in r) == 2
    assert "Published rows (not ranked" in md


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders(results, fmt):
    out = render(results, load_reference(REFERENCE_CSV), fmt=fmt)
    assert "supervised" in out and "donahue2017" in out
    if fmt == "latex":
        assert r"\begin{tabular}" in out
        assert r"\textbf{71.0 $\pm$ 1.4}" in out
        assert r"donahue2017\_thesis" in out
    elif fmt == "html":
        assert "<table>" in out and "<b>71.0 ± 1.4</b>" in out
    elif fmt == "markdown":
        assert "**71.0 ± 1.4**" in out


def test_csv_has_raw_numbers(results):
    df = pd.read_csv(io.StringIO(render(results, load_reference(REFERENCE_CSV), fmt="csv")))
    sup = df[(df["method"] == "supervised") & (df["column"] == "cls fc8")].iloc[0]
    assert sup["mean"] == pytest.approx(71.0)
    assert sup["std"] == pytest.approx(math.sqrt(2))
    assert sup["n"] == 2 and bool(sup["best"]) and not bool(sup["published"])
    big = df[(df["method"] == "bigan") & (df["column"] == "cls all")].iloc[0]
    assert big["n_failed"] == 1 and big["n"] == 1
    pub = df[df["published"]]
    assert not pub["best"].any()
    assert set(pub["source"]) == {"donahue2017_thesis", "zhang2017_splitbrain"}
    # groups in order
    firsts = list(dict.fromkeys(df["group"]))
    assert firsts == ["sup", "self-sup", "unsup", "none"]


def test_mixed_metrics_named_and_not_ranked(tmp_path):
    w = write_result
    w(tmp_path, "a.json", method="a", task="voc07-det", protocol="all", metric="voc07-11pt", value=40.0)
    w(tmp_path, "b.json", method="b", task="voc07-det", protocol="all", metric="voc10-area", value=45.0)
    w(tmp_path, "c1.json", method="c", metric="voc07-11pt", value=50.0)
    w(tmp_path, "c2.json", method="c", metric="sklearn-ap", value=52.0, seed=1)
    md = render(load_results(tmp_path))
    assert "det: voc07-11pt, voc10-area (mixed; best not marked)" in md
    cells = {r[1]: r for r in table_rows(md)}
    assert cells["b"][6] == "45.0"  # not bold
    # one cell with two metrics: both shown, never averaged
    assert cells["c"][3] == "52.0 [sklearn-ap]; 50.0 [voc07-11pt]"


def test_latex_and_html_escape_names(tmp_path):
    write_result(tmp_path, "x.json", method="my_method & <co>", value=12.34)
    results = load_results(tmp_path)
    latex = render(results, fmt="latex")
    assert r"my\_method \& \textless{}co\textgreater{}" in latex  # OT1 would print < as ¡
    assert r"\textbf{12.3}" in latex
    html_out = render(results, fmt="html")
    assert "my_method &amp; &lt;co&gt;" in html_out


def test_unknown_format(results):
    with pytest.raises(ValueError, match="format"):
        render(results, fmt="pdf")


def test_load_reference(tmp_path):
    ref = load_reference(REFERENCE_CSV)
    assert len(ref) == 29
    # the reference file's "yes" count, read independently of load_reference
    rows = list(csv.DictReader(REFERENCE_CSV.open()))
    assert ref["rescaled"].dtype == bool
    assert ref["rescaled"].sum() == sum(r["rescaled"] == "yes" for r in rows) == 9
    bad = tmp_path / "bad.csv"
    bad.write_text("source,method\nx,y\n")
    with pytest.raises(DataError, match="bad.csv"):
        load_reference(bad)
    with pytest.raises(DataError):
        load_reference(tmp_path / "missing.csv")


def test_reference_only(tmp_path):
    out = render(load_results(tmp_path), load_reference(REFERENCE_CSV), fmt="markdown")
    assert "[published: zhang2017_splitbrain]" in out
    assert "**" not in out
