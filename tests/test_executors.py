"""The executors: submitit (debug, local, mocked SLURM) and pool write what inline writes; a
killed run resumes under each; `--executor-option` and `[executor]` are checked; `status`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchharness.cli import main
from benchharness.executors import check_executor, parse_option
from benchharness.interfaces import BenchharnessError
from benchharness.locks import FileLock
from grid_results import values

SUITE = """
name = "grid"
backbone = "alexnet-small"
seeds = 2
[methods]
use = ["random", "supervised"]
[methods.supervised]
epochs = 1
[tasks]
use = ["voc07-cls"]
[tasks.voc07-cls]
protocols = ["fc8"]
epochs = 2
test_crops = 2
"""


@pytest.fixture
def grid(tmp_path, tiny_world):
    suite = tmp_path / "grid.toml"
    suite.write_text(SUITE)
    return ["run", "--suite", str(suite), "--data-root", str(tiny_world), "--device", "cpu"]


def _run(args):
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    return out.output


@pytest.mark.slow
def test_submitit_debug_and_local_write_what_inline_writes(grid, tmp_path, one_thread):
    _run([*grid, "--results", str(tmp_path / "inline")])
    inline = values(tmp_path / "inline")
    assert len(inline) == 4
    for cluster in ("debug", "local"):
        results = tmp_path / cluster
        out = _run([*grid, "--results", str(results), "--executor", "submitit",
                    "--executor-option", f"cluster={cluster}"])
        assert f"submitit: cluster {cluster}" in out
        assert values(results) == inline, cluster  # same jobs, same values, one thread each
    # the local executor's jobs ran in processes of their own, with submitit's logs
    pids = {json.loads(p.read_text())["pid"] for p in (tmp_path / "local" / "runs").rglob("*.json")}
    assert os.getpid() not in pids
    assert list((tmp_path / "local" / "submitit").rglob("*_log.out"))


def test_pool_workers_see_their_own_gpu_ids(grid, tmp_path, tiny_world, one_thread):
    from benchharness.plugins import get_registry
    from benchharness.pool import run_pool
    from benchharness.runner import Runner, plan
    from benchharness.suite import load_suite

    runner = Runner(get_registry(), tmp_path / "pool", device="cpu", log=lambda m: None, progress=None)
    the_plan = plan(load_suite(grid[2]), get_registry(), tiny_world)
    counts = run_pool(the_plan, runner, 2, lambda m: None, gpu_ids=["7", "9"])
    assert counts == {"done": 4, "skipped": 0, "failed": 0}
    seen = [json.loads(p.read_text()) for p in (tmp_path / "pool" / "runs").rglob("*.json")]
    by_pid = {}
    for r in seen:
        by_pid.setdefault(r["pid"], set()).add(r["cuda_visible_devices"])
    assert all(len(ids) == 1 for ids in by_pid.values())  # a worker keeps its GPU
    assert {i for ids in by_pid.values() for i in ids} <= {"7", "9"}
    if len(by_pid) == 2:  # two workers ran jobs: each had its own id
        assert set.union(*by_pid.values()) == {"7", "9"}
    assert os.getpid() not in by_pid


@pytest.mark.slow
@pytest.mark.parametrize("executor", [["--executor", "pool", "--workers", "2"],
                                      ["--executor", "submitit", "--executor-option", "cluster=local"]],
                         ids=["pool", "submitit-local"])
def test_a_killed_run_resumes(grid, tmp_path, executor):
    """Kill the driver (and its workers or local jobs) once the first result is stored; the same
    command then finishes the grid without redoing what was stored (inline: test_robustness).

    Two protocols, so each representation has a second job that starts only after its first one
    (waves.py): the grid cannot finish in the instant the first result appears, however slowly
    this loop gets the CPU (with one protocol all four jobs can land at once)."""
    results = tmp_path / "results"
    suite = Path(grid[2])
    suite.write_text(SUITE.replace('protocols = ["fc8"]', 'protocols = ["fc8", "fc6-8"]'))
    command = [sys.executable, "-m", "benchharness.cli", *grid, "--results", str(results), *executor]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, env=env)
    deadline = time.monotonic() + 240
    try:
        while not list(results.glob("runs/**/*.json")):
            assert driver.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no result within 4 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    stored = {p.name for p in results.glob("runs/**/*.json")}
    assert 1 <= len(stored) < 8
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert f"{len(stored)} of 8 jobs already finished" in out.stderr
    assert len(values(results)) == 8 and all(v[0] == "ok" for v in values(results).values())


def test_slurm_waves_and_parameters_through_mocked_slurm(grid, tmp_path, tiny_world):
    """What a suite's [executor] becomes in the sbatch files: partition, GPUs, CPUs, memory,
    time, account, qos, one array per wave, each wave depending on the one before."""
    from submitit.core.test_core import MockedSubprocess

    from benchharness.plugins import get_registry
    from benchharness.runner import Runner, plan
    from benchharness.submitit_executor import run_submitit
    from benchharness.ledger import Ledger
    from benchharness.status import collect
    from benchharness.suite import load_suite

    options = check_executor({"name": "submitit", "cluster": "slurm", "partition": "gpu", "gpus": 2,
                              "cpus": 8, "mem_gb": 32, "timeout_min": 120, "account": "vision",
                              "qos": "high", "array_parallelism": 1, "wait": False}, "test")
    runner = Runner(get_registry(), tmp_path / "results", device="cpu", log=lambda m: None, progress=None)
    the_plan = plan(load_suite(grid[2]), get_registry(), tiny_world)
    ledger = Ledger.start(runner, the_plan, "submitit")
    mock = MockedSubprocess(known_cmds=["srun"])
    with mock.context():
        counts = run_submitit(the_plan, runner, options, lambda m: None, on_submit=ledger.submitted)
        ledger.finish(counts)
        # status asks SLURM (sacct) about the recorded jobs: the last wave's two tasks
        from submitit.slurm.slurm import SlurmJob

        last = max(int(d.name.split("_")[0]) for d in (tmp_path / "results" / "submitit").iterdir()
                   if d.name[0].isdigit())
        mock.set_job_state(str(last), "OUT_OF_MEMORY", array=2)
        SlurmJob.watcher.clear()
        states = collect(tmp_path / "results")[0]
        assert sorted(s.state for s in states) == ["failed", "failed", "running", "running"]
        assert {s.error for s in states if s.state == "failed"} == {
            "cluster job ended OUT_OF_MEMORY without a result"}  # wave 3; the others still RUNNING
    SlurmJob.watcher.clear()
    sbatch = {}
    for path in (tmp_path / "results" / "submitit").rglob("*_submission.sh"):
        lines = [line.strip() for line in path.read_text().splitlines() if line.startswith("#SBATCH")]
        sbatch[path.parent.name] = lines
    assert len(sbatch) == 3  # pretraining (random and supervised), their first jobs, the rest
    for lines in sbatch.values():
        for expected in ("--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=8", "--mem=32GB",
                         "--time=120", "--account=vision", "--qos=high"):
            assert f"#SBATCH {expected}" in lines, (expected, lines)
    first, second, third = (sbatch[k] for k in sorted(sbatch, key=int))
    assert "#SBATCH --array=0-1%1" in first  # two representations to pretrain, one at a time
    assert not any("--dependency" in line for line in first)
    assert f"#SBATCH --dependency=afterany:{sorted(sbatch, key=int)[0]}" in second
    assert f"#SBATCH --dependency=afterany:{sorted(sbatch, key=int)[1]}" in third
    # status: the jobs are queued on the cluster, each with its cluster job id and log
    states, _ = collect(tmp_path / "results")
    assert len(states) == 4 and {s.state for s in states} == {"queued"}
    assert all(s.where.startswith("cluster job ") and s.log.endswith("_log.out") for s in states)


def test_status_reports_each_state_with_error_and_log(grid, tmp_path):
    results = tmp_path / "results"
    _run([*grid, "--results", str(results), "--method", "random"])
    files = sorted(results.glob("runs/**/*.json"))
    assert len(files) == 2
    failed = json.loads(files[0].read_text())
    failed.update(status="failed", error="RuntimeError: out of memory", value=None)
    files[0].write_text(json.dumps(failed))
    files[1].unlink()  # as if the run had been killed during that job, or were in it now
    lock = FileLock(files[1].with_suffix(".lock"))
    assert lock.try_acquire()
    try:
        out = _run(["status", "--results", str(results)])
        assert "1 running, 1 failed  (2 jobs)" in out
        assert "RuntimeError: out of memory" in out
        assert f"pid {os.getpid()}" in out
        assert Path(failed["log"]).name in out and Path(failed["log"]).is_file()
    finally:
        lock.release()
    rows = [json.loads(line) for line in _run(["status", "--results", str(results), "--json"]).splitlines()]
    assert sorted(r["state"] for r in rows) == ["failed", "stopped"]
    # a run whose driver is alive (this process) lists its missing job as queued
    ledger = next(results.glob("queue/*.json"))
    record = json.loads(ledger.read_text())
    record.update(finished_at=None, pid=os.getpid())
    ledger.write_text(json.dumps(record))
    rows = [json.loads(line) for line in _run(["status", "--results", str(results), "--json"]).splitlines()]
    assert sorted(r["state"] for r in rows) == ["failed", "queued"]


def test_executor_options_are_parsed_and_checked(grid, tmp_path):
    assert parse_option("workers=2") == ("workers", 2)
    assert parse_option("partition=gpu") == ("partition", "gpu")
    assert parse_option('setup=["module load cuda"]') == ("setup", ["module load cuda"])
    assert parse_option("wait=false") == ("wait", False)
    with pytest.raises(BenchharnessError, match="KEY=VALUE"):
        parse_option("cluster")
    assert check_executor({"name": "submitit", "cluster": "local", "mem_gb": 8}, "x")["mem_gb"] == 8
    for bad, message in (({"name": "slurm"}, "name must be one of"), ({"cluster": "aws"}, "cluster must be"),
                         ({"gpu": 1}, "has no key 'gpu'"), ({"cpus": 0}, "cpus must be a positive integer"),
                         ({"setup": "module load"}, "setup must be a list")):
        with pytest.raises(BenchharnessError, match=message):
            check_executor(bad, "where")
    # from the command line, before any data or model is touched
    out = CliRunner().invoke(main, [*grid, "--results", str(tmp_path / "r"), "--executor-option", "cpus=two"])
    assert out.exit_code == 2 and "run options: [executor] cpus must be a positive integer" in out.output
    assert not (tmp_path / "r").exists()


def test_pretraining_failures_and_deaths_are_shared_through_the_store(grid, tmp_path, tiny_world):
    from benchharness.plugins import get_registry
    from benchharness.runner import Runner, plan
    from benchharness.suite import load_suite

    runner = Runner(get_registry(), tmp_path / "results", device="cpu", log=lambda m: None, progress=None)
    the_plan = plan(load_suite(grid[2]), get_registry(), tiny_world, methods=["random"])
    first, second = the_plan.jobs
    # a failure recorded by another process fails this one's jobs without pretraining again
    runner.record_pretraining_failure(first, "RuntimeError: diverged")
    failed = runner.run_locked(the_plan, first, {})
    assert failed["status"] == "failed" and "pretraining failed: RuntimeError: diverged" in failed["error"]
    assert not runner.is_cached(first)
    # a successful pretraining clears it; a stale one left beside a cached representation is ignored
    assert runner.prepare_representation(the_plan, first) is None and runner.is_cached(first)
    assert not runner.failure_file(first).exists()
    runner.record_pretraining_failure(first, "RuntimeError: stale")
    assert runner.run_locked(the_plan, first, {})["status"] == "ok"
    # a job whose process died is stored as failed (status shows it), and run again next time
    died = runner.record_death(second, "its process died: BrokenProcessPool")
    assert runner.store.read(second)["error"] == died["error"] and not runner.store.is_done(second)
    assert runner.record_death(first, "too late") is None  # it had finished: nothing overwritten
    assert runner.store.is_done(first)
