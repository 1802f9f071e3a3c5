"""Nothing lost, nothing computed twice: locks, loss guard, resumable pretraining, kill -9,
two concurrent runs on one results directory."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchharness.interfaces import RunContext
from benchharness.locks import FileLock
from benchharness.plugins import Registry
from benchharness.training import EpochCheckpoint, LossGuard


def test_lock_is_exclusive_and_released(tmp_path):
    a, b = FileLock(tmp_path / "x.lock"), FileLock(tmp_path / "x.lock")
    assert a.try_acquire()
    assert not b.try_acquire()
    a.release()
    assert b.try_acquire()
    b.release()
    assert not (tmp_path / "x.lock").exists()


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": 0}))
    lock = FileLock(path)
    assert lock.try_acquire()
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()


def test_lock_with_an_old_heartbeat_is_taken_over_and_a_fresh_one_is_not(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"host": "another-node", "pid": 1, "since": 0}))
    assert not FileLock(path, stale_after=60).try_acquire()  # fresh heartbeat: respected
    os.utime(path, (time.time() - 600, time.time() - 600))
    lock = FileLock(path, stale_after=60)
    assert lock.try_acquire()
    lock.release()


def test_loss_guard():
    guard = LossGuard("t")
    guard.check(2.0, 0)
    guard.check(1.0, 1)
    with pytest.raises(FloatingPointError, match="t: loss became nan in epoch 3"):
        guard.check(float("nan"), 2)
    g = LossGuard("t", factor=10)
    g.check(5.0, 0)
    with pytest.raises(FloatingPointError, match="exploded to 60"):
        g.check(60.0, 1)


def _supervised_ctx(world, state_dir):
    return RunContext(torch.device("cpu"), 0, world, state_dir, "alexnet-small",
                      config={"epochs": 3, "batch_size": 16}, state_dir=state_dir, progress=None,
                      log=lambda m: None)


def test_killed_pretraining_resumes_from_its_last_epoch_and_ends_identical(tiny_world, tmp_path, monkeypatch):
    supervised = Registry().methods()["supervised"]
    reference = supervised.pretrain(_supervised_ctx(tiny_world, None))

    saves = []
    real_save = EpochCheckpoint.save

    def killed_after_two_epochs(self, state):
        real_save(self, state)
        saves.append(state["epoch"])
        if len(saves) == 2:
            raise KeyboardInterrupt  # as if killed right after epoch 2's checkpoint

    monkeypatch.setattr(EpochCheckpoint, "save", killed_after_two_epochs)
    state_dir = tmp_path / "state"
    with pytest.raises(KeyboardInterrupt):
        supervised.pretrain(_supervised_ctx(tiny_world, state_dir))
    monkeypatch.setattr(EpochCheckpoint, "save", real_save)

    logs = []
    ctx = _supervised_ctx(tiny_world, state_dir)
    ctx.log = logs.append
    resumed = supervised.pretrain(ctx)
    assert [m for m in logs if ": data = " not in m] \
        == ["resuming supervised pretraining at epoch 3"]
    for key, value in reference.network.state_dict().items():
        assert torch.equal(resumed.network.state_dict()[key], value), key
    # the untrained network's figure is the fresh network's, not the checkpoint's it resumed from
    assert resumed.meta["pretext"]["value_at_init"] == reference.meta["pretext"]["value_at_init"]


FAST_SUITE = """
name = "robust"
backbone = "alexnet-small"
seeds = 2
[methods]
use = ["random", "supervised"]
[methods.supervised]
epochs = 3
batch_size = 16
[tasks]
use = ["voc07-cls"]
[tasks.voc07-cls]
protocols = ["fc8", "all"]
epochs = 2
batch_size = 16
test_crops = 2
train_crops = 2
"""


def _cmd(world, suite, results):
    return [sys.executable, "-m", "benchharness.cli", "run", "--suite", str(suite), "--data-root",
            str(world), "--results", str(results), "--device", "cpu"]


def _results(results: Path) -> list[dict]:
    files = sorted((results / "runs").rglob("*.json"))
    return [json.loads(f.read_text()) for f in files]  # every file must parse


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_loses_nothing(tiny_world, tmp_path):
    suite = tmp_path / "robust.toml"
    suite.write_text(FAST_SUITE)
    results = tmp_path / "results"
    rng = random.Random(0)
    kill_points = [rng.uniform(2.0, 14.0) for _ in range(5)]
    for delay in kill_points:
        proc = subprocess.Popen(_cmd(tiny_world, suite, results), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _results(results)  # no torn file at any kill point
    final = subprocess.run(_cmd(tiny_world, suite, results), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    rows = _results(results)
    keys = [(r["method"], r["protocol"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys)) == 8  # 2 methods x 2 protocols x 2 seeds, each exactly once
    assert all(r["status"] == "ok" for r in rows)
    assert not list(results.rglob("*.tmp"))


@pytest.mark.slow
def test_two_concurrent_runs_share_the_grid(tiny_world, tmp_path):
    suite = tmp_path / "robust.toml"
    suite.write_text(FAST_SUITE)
    results = tmp_path / "results"
    procs = [subprocess.Popen(_cmd(tiny_world, suite, results), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    logs = "".join(err for _, err in outputs)
    assert len(re.findall(r"^pretraining supervised", logs, re.M)) == 1
    assert len(re.findall(r"^pretraining random", logs, re.M)) == 1
    started = re.findall(r"^\[(?:\d+/\d+|deferred)\] (\S+) -> voc07-cls (\S+) seed (\d)", logs, re.M)
    assert len(started) == len(set(started)) == 8  # no job computed twice
    rows = _results(results)
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
