"""``leaderboard --per-class`` and ``--cost``: their numbers are the results' numbers."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from click.testing import CliRunner

from benchharness.cli import main
from benchharness.leaderboard import FORMATS, load_results
from benchharness.leaderboard_views import cost, per_class, render_cost, render_per_class

from test_leaderboard import write_result


@pytest.fixture
def results_dir(tmp_path):
    w = write_result
    rep = {"config_hash": "r1", "device": "cuda", "pretrain_seconds": 3600.0,
           "distributed": {"world_size": 2}}
    # supervised on CUDA: pretrained once (3600 s on 2 processes) inside its first job, cached after
    w(tmp_path, "s0.json", method="supervised", seed=0, value=50.0, device="cuda",
      per_class={"cat": 40.0, "dog": 60.0}, representation=rep, wall_seconds=3700.0,
      timing={"pretrain": 3600.0, "pretrain_cached": False}, info={"peak_memory_mb": 900.0})
    w(tmp_path, "s1.json", method="supervised", seed=1, value=54.0, device="cuda",
      per_class={"cat": 44.0, "dog": 64.0}, representation=rep, wall_seconds=200.0,
      timing={"pretrain": 3600.0, "pretrain_cached": True}, info={"peak_memory_mb": 1100.0})
    w(tmp_path, "s2.json", method="supervised", seed=2, status="failed", value=None, device="cuda",
      error="boom", representation=rep, wall_seconds=50.0)
    w(tmp_path, "seg.json", method="supervised", task="voc12-seg", protocol="all", metric="miou",
      value=30.0, device="cuda", per_class={"background": 90.0, "cat": 10.0, "dog": 20.0},
      representation=rep, wall_seconds=100.0, info={"peak_memory_mb": 2000.0,
                                                     "distributed": {"world_size": 4}})
    # bigan on the CPU, pretrained by a pool worker (no pretraining inside its job)
    w(tmp_path, "b0.json", method="bigan", group="unsup", value=30.0, device="cpu",
      per_class={"cat": 20.0, "dog": 40.0},
      representation={"config_hash": "r2", "device": "cpu", "pretrain_seconds": 120.0},
      wall_seconds=30.0, timing={"pretrain": 120.0, "pretrain_cached": True})
    return tmp_path


def test_per_class_numbers(results_dir):
    long, classes = per_class(load_results(results_dir))
    assert classes == ["cat", "dog", "background"]
    sup = long[(long["method"] == "supervised") & (long["task"] == "voc07-cls")].set_index("class")
    assert sup.loc["cat", "mean"] == pytest.approx(42.0) and sup.loc["dog", "mean"] == pytest.approx(62.0)
    assert sup.loc["cat", "n"] == 2 and sup.loc["cat", "value"] == pytest.approx(52.0)  # failed seed left out
    assert sup.loc["cat", "std"] == pytest.approx(2 ** 1.5)
    seg = long[long["task"] == "voc12-seg"].set_index("class")
    assert seg.loc["background", "mean"] == 90.0 and seg.loc["background", "metric"] == "miou"
    assert list(dict.fromkeys(long["group"])) == ["sup", "unsup"]


def test_per_class_markdown_and_csv(results_dir):
    results = load_results(results_dir)
    md = render_per_class(results)
    header = md.splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "group", "method", "task", "protocol", "metric", "n", "value", "cat", "dog", "background"]
    line = next(x for x in md.splitlines() if "supervised" in x and "voc07-cls" in x)
    assert [c.strip() for c in line.strip("|").split("|")][5:] == ["2", "52.0", "42.0", "62.0", ""]
    df = pd.read_csv(io.StringIO(render_per_class(results, "csv")))
    row = df[(df["method"] == "bigan") & (df["class"] == "dog")].iloc[0]
    assert row["mean"] == 40.0 and row["n"] == 1


def test_cost_numbers(results_dir):
    table = cost(load_results(results_dir)).set_index("method")
    sup = table.loc["supervised"]
    assert sup["jobs"] == 4 and sup["failed"] == 1
    assert sup["pretrain_s"] == 3600.0  # one representation, counted once
    assert sup["transfer_s"] == pytest.approx(100.0 + 200.0 + 50.0 + 100.0)  # pretraining taken out
    assert sup["devices"] == "cuda"
    # (3600 s x 2 processes + 350 s x 1 + 100 s x 4) / 3600
    assert sup["gpu_hours"] == pytest.approx((7200 + 350 + 400) / 3600)
    assert sup["peak_memory_mb"] == 2000.0
    big = table.loc["bigan"]
    assert big["pretrain_s"] == 120.0 and big["transfer_s"] == 30.0 and big["devices"] == "cpu"
    assert pd.isna(big["gpu_hours"]) and pd.isna(big["peak_memory_mb"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format(results_dir, fmt):
    results = load_results(results_dir)
    for out in (render_per_class(results, fmt), render_cost(results, fmt)):
        assert "supervised" in out and "bigan" in out
    if fmt == "markdown":
        line = next(x for x in render_cost(results).splitlines() if "supervised" in x)
        assert [c.strip() for c in line.strip("|").split("|")] == [
            "sup", "supervised", "4", "1", "3600", "450", "cuda", "2.208", "2000"]
    if fmt == "latex":
        assert r"\toprule" in render_cost(results, fmt) and r"\multicolumn{3}{c}{per class}" in \
            render_per_class(results, fmt)


def test_cli_views(results_dir):
    runner = CliRunner()
    out = runner.invoke(main, ["leaderboard", "--results", str(results_dir), "--per-class"])
    assert out.exit_code == 0, out.output
    assert "background" in out.output
    out = runner.invoke(main, ["leaderboard", "--results", str(results_dir), "--cost", "--format", "csv"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("group,method,jobs,failed,pretrain_s")
    out = runner.invoke(main, ["leaderboard", "--results", str(results_dir), "--cost", "--per-class"])
    assert out.exit_code == 2
