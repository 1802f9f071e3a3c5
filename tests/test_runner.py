"""The runner and results store: atomic writes, resume, representation caching, failures."""

from __future__ import annotations

import json
import os

import pytest
import torch

from benchharness import atomic, hookimpl
from benchharness.interfaces import Method
from benchharness.plugins import Registry
from benchharness.representation import Representation
from benchharness.runner import Runner, plan
from benchharness.suite import load_suite

REQUIRED = {"method", "group", "task", "protocol", "metric", "value", "per_class", "seed", "suite",
            "config_hash", "versions", "device", "timing", "status"}


class CountingMethod:
    """A plugin whose method counts its pretrainings; ``fail`` makes it raise."""

    def __init__(self, fail=False):
        self.calls = 0
        self.fail = fail

    def pretrain(self, ctx):
        self.calls += 1
        if self.fail:
            raise RuntimeError("pretraining diverged")
        torch.manual_seed(ctx.seed)
        return Representation(ctx.build_backbone(), ctx.backbone, learned_stages=(),
                              meta={"pretrain_data": "none"})

    @hookimpl
    def benchharness_methods(self):
        return [Method("counting", "unsup", (), self.pretrain, "counts its calls"),
                Method("exploding", "self-sup", (), CountingMethod(fail=True).pretrain)]


def _setup(tmp_path, tiny_world, fast_suite, methods=("counting",)):
    reg = Registry()
    plugin = CountingMethod()
    reg.register(plugin, name="counting-plugin")
    suite = load_suite(str(fast_suite))
    the_plan = plan(suite, reg, tiny_world, methods=list(methods))
    runner = Runner(reg, tmp_path / "results", device="cpu", log=lambda m: None,
                    progress=None)
    return reg, plugin, the_plan, runner


def test_grid_writes_one_valid_result_per_job_and_resumes(tmp_path, tiny_world, fast_suite):
    reg, plugin, the_plan, runner = _setup(tmp_path, tiny_world, fast_suite)
    assert len(the_plan.jobs) == 4  # 2 protocols x 2 seeds
    assert runner.run(the_plan) == {"done": 4, "skipped": 0, "failed": 0}
    assert plugin.calls == 1  # pretrained once for all four jobs
    files = sorted((tmp_path / "results" / "runs").rglob("*.json"))
    assert len(files) == 4
    for f in files:
        result = json.loads(f.read_text())
        assert REQUIRED <= set(result)
        assert result["status"] == "ok" and result["metric"] == "voc07-11pt"
        assert 0 <= result["value"] <= 100
        assert set(result["per_metric"]) == {"voc07-11pt", "sklearn-ap", "voc10-area"}
        assert {"pretrain", "transfer", "evaluate"} <= set(result["timing"])
        assert set(result["versions"]) == {"benchharness", "git_commit", "torch", "torchvision"}
    assert not list((tmp_path / "results").rglob("*.tmp"))

    # a re-run skips everything and does not pretrain again (representation cached on disk)
    reg2, plugin2, plan2, runner2 = _setup(tmp_path, tiny_world, fast_suite)
    assert runner2.run(plan2) == {"done": 0, "skipped": 4, "failed": 0}
    assert plugin2.calls == 0

    # losing one result (a run killed mid-job) recomputes exactly that job
    files[0].unlink()
    reg3, plugin3, plan3, runner3 = _setup(tmp_path, tiny_world, fast_suite)
    assert runner3.run(plan3) == {"done": 1, "skipped": 3, "failed": 0}
    assert plugin3.calls == 0
    assert len(list((tmp_path / "results" / "runs").rglob("*.json"))) == 4


def test_same_seed_same_number(tmp_path, tiny_world, fast_suite):
    _, _, the_plan, runner = _setup(tmp_path, tiny_world, fast_suite)
    job = the_plan.jobs[0]
    a = runner.run_job(the_plan, job, {})
    runner.store.path_for(job).unlink()
    b = runner.run_job(the_plan, job, {})
    assert a["value"] == b["value"]


def test_failed_pretraining_is_recorded_and_the_grid_goes_on(tmp_path, tiny_world, fast_suite):
    _, _, the_plan, runner = _setup(tmp_path, tiny_world, fast_suite, methods=("exploding", "counting"))
    counts = runner.run(the_plan)
    assert counts == {"done": 4, "skipped": 0, "failed": 4}
    failed = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").rglob("*.json")]
    failed = [r for r in failed if r["method"] == "exploding"]
    assert len(failed) == 4
    assert all(r["status"] == "failed" and "pretraining diverged" in r["error"] for r in failed)


def test_unknown_names_and_missing_data_stop_before_compute(tmp_path, tiny_world, fast_suite):
    from benchharness.interfaces import BenchharnessError, DataError

    reg = Registry()
    suite = load_suite(str(fast_suite))
    with pytest.raises(BenchharnessError, match="unknown method 'nope'.*random"):
        plan(suite, reg, tiny_world, methods=["nope"])
    with pytest.raises(BenchharnessError, match="needs an argument"):
        plan(suite, reg, tiny_world, methods=["checkpoint"])
    with pytest.raises(DataError, match="VOCdevkit"):
        plan(suite, reg, tmp_path / "empty")


def test_atomic_write_keeps_old_content_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic.write_json(path, {"v": 1})

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_task_section_can_set_its_own_number_of_seeds(tmp_path, tiny_world):
    from benchharness.interfaces import BenchharnessError
    from benchharness.suite import Suite

    raw = {"methods": {"use": ["random"]},
           "tasks": {"use": ["voc07-cls", "voc12-seg"], "voc07-cls": {"protocols": ["fc8"]},
                     "voc12-seg": {"protocols": ["all"], "seeds": 1, "epochs": 1}},
           "seeds": 3}
    suite = Suite.from_dict(raw)
    assert suite.task_seeds == {"voc12-seg": 1}
    assert "seeds" not in suite.task_config["voc12-seg"]  # not a setting the task sees
    jobs = plan(suite, Registry(), tiny_world).jobs
    assert sorted((j.task, j.seed) for j in jobs) == [("voc07-cls", 0), ("voc07-cls", 1),
                                                      ("voc07-cls", 2), ("voc12-seg", 0)]
    assert len(plan(suite, Registry(), tiny_world, seeds=2).jobs) == 4  # --seeds replaces both
    raw["tasks"]["voc12-seg"]["seeds"] = 0
    with pytest.raises(BenchharnessError, match=r"\[tasks.voc12-seg\] seeds"):
        Suite.from_dict(raw)


def test_a_protocol_table_can_set_its_own_number_of_seeds(tiny_world):
    from benchharness.interfaces import BenchharnessError
    from benchharness.suite import Suite

    raw = {"methods": {"use": ["random"]}, "seeds": 2,
           "tasks": {"use": ["voc07-cls"],
                     "voc07-cls": {"protocols": ["fc8", "all"], "seeds": 3,
                                   "all": {"seeds": 1, "epochs": 1}}}}
    suite = Suite.from_dict(raw)
    assert suite.task_seeds == {"voc07-cls": 3, "voc07-cls.all": 1}
    assert suite.task_config["voc07-cls"]["all"] == {"epochs": 1}  # not a setting the task sees
    assert raw["tasks"]["voc07-cls"]["all"] == {"seeds": 1, "epochs": 1}  # the input is not changed
    assert (suite.seeds_for("voc07-cls", "all"), suite.seeds_for("voc07-cls", "fc8")) == (1, 3)
    jobs = plan(suite, Registry(), tiny_world).jobs
    assert sorted((j.protocol, j.seed) for j in jobs) == [("all", 0), ("fc8", 0), ("fc8", 1), ("fc8", 2)]
    raw["tasks"]["voc07-cls"]["all"]["seeds"] = 1.5
    with pytest.raises(BenchharnessError, match=r"\[tasks.voc07-cls.all\] seeds"):
        Suite.from_dict(raw)
