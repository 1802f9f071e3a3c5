"""One configuration per leaderboard row: every view refuses to average different settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchharness import leaderboard_views as views
from benchharness.cli import main
from benchharness.configurations import differing
from benchharness.interfaces import BenchharnessError
from benchharness.leaderboard import load_results, render, summarize
from benchharness.report import build_report


def write(root: Path, name: str, **fields) -> Path:
    result = {"status": "ok", "method": "bigan", "group": "unsup", "task": "voc07-cls",
              "protocol": "fc8", "metric": "voc07-11pt", "value": 40.0, "per_class": {"cat": 40.0},
              "seed": 0, "suite": "smoke", "config_hash": "job0", "representation_key": "rep450",
              "method_config": {"steps": 450, "lr": 0.0002}, "task_config": {"epochs": 20},
              "backbone": "alexnet-small", "method_spec": "bigan"}
    result.update(fields)
    path = root / "runs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return path


def every_view(results: Path):
    df = load_results(results)
    yield lambda: render(df)
    yield lambda: render(df, fmt="csv")
    yield lambda: views.render_per_class(df, "markdown")
    yield lambda: views.render_cost(df, "markdown")
    yield lambda: build_report(results)


def test_two_method_configurations_under_one_name_are_refused_by_every_view(tmp_path):
    old = write(tmp_path, "a/fc8.json")
    new = write(tmp_path, "b/det.json", task="voc07-det", protocol="all", config_hash="job1",
                representation_key="rep900", method_config={"steps": 900, "lr": 0.0002}, suite="smoke2")
    for view in every_view(tmp_path):
        with pytest.raises(BenchharnessError) as info:
            view()
        message = str(info.value)
        assert message.startswith("method 'bigan' has results of 2 configurations")
        assert f"(oldest first) rep450 (1 result, e.g. {old})" in message
        assert f"and rep900 (1 result, e.g. {new})" in message
        assert "they differ in steps: 450 vs 900." in message  # lr, equal, is not named
        assert "as a variant" in message and "--results directory" in message
        assert "pick one suite with --suite (smoke, smoke2 are mixed here)" in message


def test_two_task_configurations_of_one_seed_are_refused(tmp_path):
    """Two files that differ only in their job hash (the task's settings changed)."""
    write(tmp_path, "a/fc8.json")
    write(tmp_path, "b/fc8.json", config_hash="job1", task_config={"epochs": 10}, value=44.0)
    out = CliRunner().invoke(main, ["leaderboard", "--results", str(tmp_path)])
    assert out.exit_code == 2
    assert "method 'bigan', voc07-cls fc8 seed 0: results of 2 configurations" in out.output
    assert "config hash (oldest first) job0 (1 result" in out.output and "job1 (1 result" in out.output
    assert "they differ in epochs: 20 vs 10" in out.output
    assert "as a variant" not in out.output  # a variant changes the method, not the task


def test_one_configuration_over_seeds_is_averaged(tmp_path):
    write(tmp_path, "a/fc8-0.json", value=40.0)
    write(tmp_path, "a/fc8-1.json", seed=1, config_hash="job1", value=44.0)
    write(tmp_path, "old/fc8-0.json", method="random", group="none", representation_key=None,
          config_hash=None, method_config=None)  # stored before results recorded these
    rows = summarize(load_results(tmp_path)).set_index("method")
    assert rows.loc["bigan", "mean"] == pytest.approx(42.0) and rows.loc["bigan", "n"] == 2


def test_differing_names_each_changed_key_and_unrecorded_settings():
    assert (differing({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4})
            == "they differ in b: 2 vs 3; c: 'unset' vs 4")
    assert differing({"a": 1}, {"a": 1}) == "their recorded settings are equal"
    assert "do not record" in differing({"a": 1}, differing.__globals__["NOT_RECORDED"])


SUITE = """
name = "cfg"
backbone = "alexnet-small"
seeds = 1
[methods]
use = ["random"]
[methods.random]
init_seed = {seed}
[tasks]
use = ["voc07-cls"]
[tasks.voc07-cls]
protocols = ["fc8"]
epochs = 1
batch_size = 16
test_crops = 1
"""


def test_a_changed_method_section_between_two_runs_is_refused(tmp_path, tiny_world, one_thread):
    suite, results = tmp_path / "cfg.toml", tmp_path / "results"
    for seed in (3, 4):  # someone edits [methods.random] between two runs into one results dir
        suite.write_text(SUITE.format(seed=seed))
        out = CliRunner().invoke(main, ["run", "--suite", str(suite), "--data-root", str(tiny_world),
                                        "--results", str(results), "--device", "cpu"])
        assert out.exit_code == 0, out.output
    out = CliRunner().invoke(main, ["leaderboard", "--results", str(results)])
    assert out.exit_code == 2
    assert "method 'random' has results of 2 configurations" in out.output
    assert "they differ in init_seed: 3 vs 4" in out.output, out.output
