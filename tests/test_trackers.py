"""The experiment trackers (TensorBoard, MLflow, W&B): each off unless configured, each writing
what it should when on, and the on_result hook called in the driving process only."""

from __future__ import annotations

import json
import os
from concurrent.futures import Future

import pytest

from benchharness import hookimpl, trackers
from benchharness.suite import Job

RESULT = {
    "status": "ok", "error": None, "method": "my method", "group": "self-sup", "task": "voc07-cls",
    "protocol": "fc8", "metric": "voc07-11pt", "value": 52.5, "seed": 1, "suite": "smoke",
    "config_hash": "abc123", "representation_key": "r1", "device": "cpu", "schedule_fraction": 1.0,
    "per_class": {"cat": 40.0, "dog": 65.0}, "per_metric": {"voc07-11pt": 52.5, "sklearn-ap": 53.0},
    "timing": {"transfer": 12.0, "evaluate": 0.5, "pretrain_cached": True},
    "info": {"peak_memory_mb": 321.0}, "wall_seconds": 13.0,
    "data": {"tag": "synthetic-small:f94e02"},
}
FAILED = {**RESULT, "status": "failed", "error": "RuntimeError: boom", "value": None, "metric": None,
          "per_class": None, "per_metric": None, "seed": 0, "info": None}


@pytest.fixture(autouse=True)
def no_trackers(monkeypatch):
    for var in (*trackers.ENV.values(), trackers.MLFLOW_EXPERIMENT, trackers.WANDB_DIR):
        monkeypatch.delenv(var, raising=False)


def test_scalars_and_tags():
    numbers = trackers.scalars(RESULT)
    assert numbers == {"value": 52.5, "metric/voc07-11pt": 52.5, "metric/sklearn-ap": 53.0,
                       "per_class/cat": 40.0, "per_class/dog": 65.0, "timing/transfer": 12.0,
                       "timing/evaluate": 0.5, "wall_seconds": 13.0, "peak_memory_mb": 321.0}
    assert trackers.scalars(FAILED) == {"timing/transfer": 12.0, "timing/evaluate": 0.5,
                                        "wall_seconds": 13.0}
    t = trackers.tags(RESULT)
    assert t["method"] == "my method" and t["seed"] == "1" and t["data"] == "synthetic-small:f94e02"
    assert trackers.run_name(RESULT) == "my method voc07-cls fc8 seed 1"


def test_all_off_unless_configured(monkeypatch):
    """With no variable set, every tracker is loaded yet none imports its library."""
    from benchharness.plugins import Registry
    from benchharness_plugins import track_mlflow, track_tensorboard, track_wandb

    calls = []
    for module in (track_mlflow, track_tensorboard, track_wandb):
        monkeypatch.setattr(module, "require", lambda *args: calls.append(args))
    registry = Registry()
    names = {name for name, _ in registry.pm.list_name_plugin()}
    assert {"track-tensorboard", "track-mlflow", "track-wandb"} <= names
    assert registry.notify_result(RESULT) == []
    assert calls == []


def test_missing_library_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    monkeypatch.setenv("BENCHHARNESS_WANDB_PROJECT", "p")
    from benchharness_plugins import track_wandb

    with pytest.raises(trackers.TrackerError, match="BENCHHARNESS_WANDB_PROJECT is set but wandb"):
        track_wandb.benchharness_on_result(RESULT)


def test_tensorboard_writes_event_files(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from benchharness_plugins import track_tensorboard

    monkeypatch.setenv("BENCHHARNESS_TENSORBOARD", str(tmp_path / "tb"))
    track_tensorboard.benchharness_on_result(RESULT)
    track_tensorboard.benchharness_on_result(FAILED)
    track_tensorboard.close()
    run = tmp_path / "tb" / "my_method"
    assert list(run.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run))
    events.Reload()
    assert "voc07-cls/fc8/per_class/dog" in events.Tags()["scalars"]
    value = events.Scalars("voc07-cls/fc8/value")
    assert [(e.step, e.value) for e in value] == [(1, 52.5)]
    assert [e.step for e in events.Scalars("voc07-cls/fc8/wall_seconds")] == [1, 0]
    assert "voc07-cls/fc8/result/text_summary" in events.Tags()["tensors"]


def test_mlflow_records_runs_in_sqlite(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from benchharness_plugins import track_mlflow

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact folder, should it make one
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("BENCHHARNESS_MLFLOW_URI", uri)
    monkeypatch.setenv("BENCHHARNESS_MLFLOW_EXPERIMENT", "voc")
    track_mlflow.benchharness_on_result(RESULT)
    track_mlflow.benchharness_on_result(FAILED)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("voc")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"my method voc07-cls fc8 seed 1", "my method voc07-cls fc8 seed 0"}
    ok = runs["my method voc07-cls fc8 seed 1"]
    assert ok.info.status == "FINISHED" and ok.data.tags["method"] == "my method"
    assert ok.data.tags["protocol"] == "fc8" and ok.data.tags["seed"] == "1"
    assert ok.data.metrics["value"] == 52.5 and ok.data.metrics["per_class/cat"] == 40.0
    assert ok.data.metrics["timing/transfer"] == 12.0
    failed = runs["my method voc07-cls fc8 seed 0"]
    assert failed.info.status == "FAILED" and failed.data.tags["error"] == "RuntimeError: boom"


def test_wandb_offline_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from benchharness_plugins import track_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("BENCHHARNESS_WANDB_PROJECT", "bh-test")
    monkeypatch.setenv("BENCHHARNESS_WANDB_DIR", str(tmp_path))
    track_wandb.benchharness_on_result(RESULT)
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    logs = list(runs[0].glob("run-*.wandb"))
    assert len(logs) == 1
    # W&B keeps an offline run as its transaction log alone (`wandb sync` uploads it); its
    # records hold the config, the history and the summary with their keys and values as text
    data = logs[0].read_bytes()
    for text in (b"my method", b"voc07-cls", b"per_class/dog", b"timing/transfer", b"52.5"):
        assert text in data, text


# ------------------------------------------------------------------ driving process only


class Recorder:
    """An on_result plugin recording each result with the process it ran in."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def benchharness_on_result(self, result):
        self.seen.append((os.getpid(), result))


def _job(seed):
    return Job(suite="s", method_spec="random", task="voc07-cls", protocol="fc8", seed=seed,
               representation_key="r", config_hash=f"h{seed}", task_config={})


def _done(value):
    future = Future()
    future.set_result(value)
    return future


class DriverRunner:
    """What run_waves asks of the driver's runner, recording the calls."""

    def __init__(self):
        self.notified, self.deaths = [], []

    def is_cached(self, job):
        return True

    def notify_stored(self, job, result):
        self.notified.append((job.seed, result["status"]))

    def record_death(self, job, error):
        self.deaths.append((job.seed, error))
        return {"status": "failed", "error": error}


def test_run_waves_hands_every_result_to_the_driver():
    from benchharness.waves import run_waves

    jobs = [_job(0), _job(1), _job(2), _job(3)]
    results = {0: {"status": "ok", "metric": "m", "value": 1.0, "wall_seconds": 1.0},
               1: {"status": "failed", "error": "x"}, 2: None}  # 2: finished by another run

    def start(job):
        if job.seed == 3:  # its process died
            future = Future()
            future.set_exception(MemoryError("killed"))
            return future
        return _done(results[job.seed])

    runner = DriverRunner()
    counts = run_waves(jobs, runner, lambda job: _done(None), start,
                       {"done": 0, "skipped": 0, "failed": 0}, lambda m: None)
    assert counts == {"done": 1, "skipped": 1, "failed": 2}
    assert sorted(runner.notified) == [(0, "ok"), (1, "failed"), (3, "failed")]
    assert runner.deaths == [(3, "its process died: MemoryError: killed")]


def test_notify_stored_sends_the_stored_result(tmp_path):
    from benchharness.plugins import Registry
    from benchharness.runner import Runner

    recorder = Recorder()
    registry = Registry(load_entry_points=False)
    registry.register(recorder, name="recorder")
    runner = Runner(registry, tmp_path, device="cpu", log=lambda m: None, progress=None)
    job = _job(0)
    runner.store.write(job, {**RESULT, "seed": 0})
    runner.notify_stored(job, {"status": "ok", "value": 52.5})
    assert recorder.seen[-1][1]["per_class"] == {"cat": 40.0, "dog": 65.0}  # the full result
    runner.notify_stored(_job(1), {"status": "failed", "error": "the job died: killed"})
    died = recorder.seen[-1][1]
    assert died["status"] == "failed" and died["seed"] == 1 and died["task"] == "voc07-cls"
    assert {pid for pid, _ in recorder.seen} == {os.getpid()}


def test_pool_notifies_in_the_driver_only(tmp_path, tiny_world, monkeypatch):
    """Workers inherit BENCHHARNESS_TENSORBOARD; event files name the writing process's pid,
    so the driver's pid alone shows the hook ran in the driver only."""
    pytest.importorskip("tensorboard")
    import torch

    from benchharness.plugins import get_registry
    from benchharness.pool import run_pool
    from benchharness.runner import Runner, plan
    from benchharness.suite import load_suite
    from benchharness_plugins import track_tensorboard

    suite = tmp_path / "grid.toml"
    suite.write_text('name = "grid"\nbackbone = "alexnet-small"\nseeds = 2\n[methods]\nuse = ["random"]\n'
                     '[tasks]\nuse = ["voc07-cls"]\n[tasks.voc07-cls]\nprotocols = ["fc8"]\nepochs = 1\n'
                     'test_crops = 1\n')
    monkeypatch.setenv("BENCHHARNESS_TENSORBOARD", str(tmp_path / "tb"))
    threads = torch.get_num_threads()
    try:
        runner = Runner(get_registry(), tmp_path / "results", device="cpu", log=lambda m: None, progress=None)
        counts = run_pool(plan(load_suite(str(suite)), get_registry(), tiny_world), runner, 2, lambda m: None)
    finally:
        torch.set_num_threads(threads)
        track_tensorboard.close()
    assert counts == {"done": 2, "skipped": 0, "failed": 0}
    worker_pids = {json.loads(p.read_text())["pid"] for p in (tmp_path / "results" / "runs").rglob("*.json")}
    assert os.getpid() not in worker_pids
    files = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert files and {f.name.split(".")[-2] for f in files} == {str(os.getpid())}


def test_submitit_debug_notifies_each_result_once(tmp_path, tiny_world):
    """submitit's debug cluster runs the step in this process: the hook must still be called
    once per job, by the driver (the step's own runner does not notify)."""
    pytest.importorskip("submitit")
    import torch

    from benchharness.plugins import get_registry
    from benchharness.runner import Runner, plan
    from benchharness.submitit_executor import run_submitit
    from benchharness.suite import load_suite

    suite = tmp_path / "grid.toml"
    suite.write_text('name = "grid"\nbackbone = "alexnet-small"\nseeds = 1\n[methods]\nuse = ["random"]\n'
                     '[tasks]\nuse = ["voc07-cls"]\n[tasks.voc07-cls]\nprotocols = ["fc8"]\nepochs = 1\n'
                     'test_crops = 1\n')
    registry = get_registry()
    recorder = Recorder()
    registry.register(recorder, name="recorder-submitit")
    threads = torch.get_num_threads()
    try:
        runner = Runner(registry, tmp_path / "results", device="cpu", log=lambda m: None, progress=None)
        counts = run_submitit(plan(load_suite(str(suite)), registry, tiny_world), runner,
                              {"cluster": "debug"}, lambda m: None)
    finally:
        registry.pm.unregister(name="recorder-submitit")
        torch.set_num_threads(threads)
    assert counts == {"done": 1, "skipped": 0, "failed": 0}
    assert len(recorder.seen) == 1
    assert recorder.seen[0][1]["status"] == "ok" and "per_class" in recorder.seen[0][1]
