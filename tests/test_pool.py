"""The pool executor: worker processes on this machine write what inline writes."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from benchharness.cli import main
from benchharness.interfaces import BenchharnessError
from benchharness.suite import Suite
from grid_results import values

SUITE = """
name = "pooled"
backbone = "alexnet-small"
seeds = 2
[methods]
use = ["random", "supervised"]
[methods.supervised]
epochs = 1
[tasks]
use = ["voc07-cls"]
[tasks.voc07-cls]
protocols = ["fc8", "fc6-8"]
epochs = 2
test_crops = 2
"""


def test_the_pool_writes_the_values_inline_writes_and_resumes(tiny_world, tmp_path, one_thread):
    suite = tmp_path / "pooled.toml"
    suite.write_text(SUITE)
    common = ["run", "--suite", str(suite), "--data-root", str(tiny_world), "--device", "cpu"]
    out = CliRunner().invoke(main, [*common, "--results", str(tmp_path / "inline")])
    assert out.exit_code == 0, out.output
    out = CliRunner().invoke(main, [*common, "--results", str(tmp_path / "pool"),
                                    "--executor", "pool", "--workers", "2"])
    assert out.exit_code == 0, out.output
    assert "pool: 2 workers, 1 thread(s) each" in out.output
    inline, pooled = values(tmp_path / "inline"), values(tmp_path / "pool")
    assert len(inline) == 8 and pooled == inline  # same jobs, same values, same thread count
    # a killed run resumes: the jobs that are gone run again, the others are skipped
    gone = sorted((tmp_path / "pool" / "runs").rglob("*fc8__seed1*.json"))
    for path in gone:
        path.unlink()
    out = CliRunner().invoke(main, [*common, "--results", str(tmp_path / "pool"),
                                    "--executor", "pool", "--workers", "2"])
    assert out.exit_code == 0, out.output
    assert f"finished: {len(gone)} run, {8 - len(gone)} already done, 0 failed" in out.output
    assert values(tmp_path / "pool") == inline


def test_the_executor_section_is_checked():
    raw = {"methods": {"use": ["random"]}, "tasks": {"use": ["voc07-cls"]}}
    assert Suite.from_dict({**raw, "executor": {"name": "pool", "workers": 2}}).executor == {
        "name": "pool", "workers": 2}
    for bad in ({"name": "slurm"}, {"workers": 0}, {"name": "pool", "threads": 2}):
        with pytest.raises(BenchharnessError, match=r"\[executor\]"):
            Suite.from_dict({**raw, "executor": bad})
