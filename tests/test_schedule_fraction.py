"""`run --schedule-fraction F`: schedule counts scaled, hashes changed, results and leaderboard
marked (issue 13, item 5)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from benchharness.cli import main
from benchharness.interfaces import BenchharnessError
from benchharness.plugins import Registry
from benchharness.runner import plan
from benchharness.suite import SCHEDULE_KEYS, load_suite, scale_schedule
from benchharness.tasks.classification import ClsConfig
from benchharness.tasks.settings import from_suite_section

SECTION = {"protocols": ["fc8", "all"], "epochs": 255, "iterations": 80000, "stepsize": 20000,
           "steps": 480, "warmup_epochs": 2, "lr_steps": 3, "lr": 0.001, "batch_size": 16,
           "input_size": 0, "fc8": {"epochs": 10, "lr": 0.01}}


def test_the_schedule_keys():
    assert SCHEDULE_KEYS == {"epochs", "iterations", "steps", "warmup_epochs", "stepsize"}


def test_suite_values_scale_with_a_floor_of_one_and_lr_steps_untouched():
    scaled = scale_schedule(SECTION, 0.2)
    assert scaled == {"protocols": ["fc8", "all"], "epochs": 51, "iterations": 16000,
                      "stepsize": 4000, "steps": 96, "warmup_epochs": 1, "lr_steps": 3,
                      "lr": 0.001, "batch_size": 16, "input_size": 0,
                      "fc8": {"epochs": 2, "lr": 0.01}}
    tiny = scale_schedule(SECTION, 0.001)
    assert (tiny["epochs"], tiny["iterations"], tiny["stepsize"], tiny["steps"], tiny["fc8"]["epochs"]) \
        == (1, 80, 20, 1, 1)
    assert scale_schedule({"epochs": 0, "warmup_epochs": 0}, 0.5) == {"epochs": 0, "warmup_epochs": 0}
    assert SECTION["epochs"] == 255  # the suite's own table is not changed
    assert scale_schedule(SECTION, 1.0) == SECTION


@dataclass
class _Settings:
    iterations: int = 1000
    stepsize: int = 300
    lr_steps: int = 2
    batch_size: int = 16
    epochs: int = 0  # 0: "not used"


def test_dataclass_defaults_scale_generically_but_not_what_the_suite_gives():
    s = from_suite_section(_Settings, "t", ("a",), {"schedule_fraction": 0.1}, "a")
    assert (s.iterations, s.stepsize, s.lr_steps, s.batch_size, s.epochs) == (100, 30, 2, 16, 0)
    # a value from the suite arrives scaled by the runner already: not scaled twice
    s = from_suite_section(_Settings, "t", ("a",), {"schedule_fraction": 0.1, "iterations": 7,
                                                   "a": {"stepsize": 3}}, "a")
    assert (s.iterations, s.stepsize) == (7, 3)
    assert from_suite_section(_Settings, "t", ("a",), {}, "a") == _Settings()
    cls = ClsConfig.from_mapping({"schedule_fraction": 0.1}, "fc8")
    assert cls.epochs == 3 and cls.lr_steps == ClsConfig().lr_steps
    with pytest.raises(BenchharnessError, match="schedule fraction"):
        from_suite_section(_Settings, "t", ("a",), {"schedule_fraction": 1.5}, "a")


SUITE = """
name = "sf"
backbone = "alexnet-small"
seeds = 1
[methods]
use = ["random", "supervised"]
[methods.supervised]
epochs = 20
[tasks]
use = ["voc07-cls"]
[tasks.voc07-cls]
protocols = ["fc8", "all"]
epochs = 20
lr_steps = 2
[tasks.voc07-cls.all]
epochs = 10
"""


def test_plan_scales_sections_and_every_hash_changes(tmp_path, tiny_world):
    path = tmp_path / "sf.toml"
    path.write_text(SUITE)
    suite, reg = load_suite(str(path)), Registry()
    full = plan(suite, reg, tiny_world)
    part = plan(suite, reg, tiny_world, schedule_fraction=0.1)
    assert part.schedule_fraction == 0.1 and full.schedule_fraction == 1.0
    assert len(full.jobs) == len(part.jobs) == 4
    assert not {j.config_hash for j in full.jobs} & {j.config_hash for j in part.jobs}
    job = part.jobs[0]
    assert job.task_config["epochs"] == 2 and job.task_config["all"]["epochs"] == 1
    assert job.task_config["lr_steps"] == 2 and job.task_config["schedule_fraction"] == 0.1
    assert "schedule_fraction" not in full.jobs[0].task_config
    sup = next(j for j in part.jobs if j.method == "supervised").representation_key
    assert part.method_configs[sup] == {"epochs": 2}
    # random has no schedule in the suite: its representation is the same; supervised's is not
    keys = lambda p: {j.method: j.representation_key for j in p.jobs}  # noqa: E731
    assert keys(full)["random"] == keys(part)["random"]
    assert keys(full)["supervised"] != keys(part)["supervised"]
    with pytest.raises(BenchharnessError, match="schedule fraction"):
        plan(suite, reg, tiny_world, schedule_fraction=0)
    suite.task_config["voc07-cls"]["schedule_fraction"] = 0.5  # only the option sets it
    with pytest.raises(BenchharnessError, match=r"sf.toml: \[tasks.voc07-cls\] sets schedule_fraction"):
        plan(suite, reg, tiny_world)


def test_recorded_in_results_and_marked_on_the_leaderboard(tmp_path, tiny_world, fast_suite):
    cli, results = CliRunner(), tmp_path / "results"
    args = ["run", "--suite", str(fast_suite), "--data-root", str(tiny_world), "--results",
            str(results), "--method", "random", "--protocol", "fc8", "--seeds", "1", "--device", "cpu"]
    for extra in ([], ["--schedule-fraction", "0.5"]):
        out = cli.invoke(main, args + extra)
        assert out.exit_code == 0, out.output
    stored = {r["schedule_fraction"]: r for r in
              (json.loads(p.read_text()) for p in (results / "runs").rglob("*.json"))}
    assert set(stored) == {1.0, 0.5}
    assert stored[0.5]["data"] == stored[1.0]["data"]
    assert stored[0.5]["data"]["splits"] and stored[0.5]["data"]["root"] == str(tiny_world.resolve())
    assert stored[0.5]["config_hash"] != stored[1.0]["config_hash"]
    board = cli.invoke(main, ["leaderboard", "--results", str(results)]).output
    rows = {line.split("|")[2].strip(): line for line in board.splitlines() if line.startswith("| none")}
    assert set(rows) == {"random", "random †"}  # two rows, never averaged together
    assert f"{stored[1.0]['value']:.1f}" in rows["random"]
    assert f"{stored[0.5]['value']:.1f}" in rows["random †"]
    assert "† schedule fraction 0.5" in board
