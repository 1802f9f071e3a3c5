"""``benchharness status``: what the runs recorded in a results directory are doing.

A job's state comes from what every executor leaves the same way: its result file (``done`` or
``failed``), its result lock (``running``: a live process holds it), its representation's lock
(``pretraining``), and the run's ledger (:mod:`~benchharness.ledger`): a job with none of these
is ``queued`` while its run is alive (its driver process runs, or it handed the job to a cluster
and did not wait), else ``stopped`` (the run ended or was killed before it; re-running the
command picks it up). When several runs list one job, the latest one counts.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from .ledger import read_ledgers
from .locks import FileLock, pid_alive

STATES = ("running", "pretraining", "failed", "queued", "stopped", "done")


@dataclass
class JobState:
    """One job's state, with what explains it."""

    method: str
    task: str
    protocol: str
    seed: int
    state: str
    run: str
    executor: str
    where: str = ""  # who runs it: pid@host, or the cluster job id
    error: str = ""
    log: str = ""


def _driver_alive(record: dict) -> bool:
    if record.get("finished_at"):
        return False
    if record.get("host") != socket.gethostname():
        return True  # another machine's driver: cannot tell, assume it is there
    return pid_alive(int(record.get("pid", -1)))


def _read_result(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collect(results_dir: Path) -> tuple[list[JobState], list[dict]]:
    """Every job of every recorded run (the latest run's entry when several list it), and the
    runs' records."""
    records = read_ledgers(results_dir)
    latest: dict[str, tuple[dict, dict]] = {}
    for record in records:
        for entry in record["jobs"]:
            latest[entry["result"]] = (record, entry)
    states = []
    for result_path, (record, entry) in latest.items():
        states.append(_state(record, entry, Path(result_path)))
    return states, records


def _state(record: dict, entry: dict, result_path: Path) -> JobState:
    state = JobState(entry["method"], entry["task"], entry["protocol"], entry["seed"], "", record["run"],
                     record["executor"], log=entry["log"])
    cluster = record.get("cluster", {})
    on_cluster = (cluster.get(f"transfer:{entry['config_hash']}")
                  or cluster.get(f"pretrain:{entry['representation_key']}"))
    if on_cluster:
        state.where, state.log = f"cluster job {on_cluster['job_id']}", on_cluster["log"]
    result = _read_result(result_path)
    slurm = "UNKNOWN"
    if on_cluster and on_cluster.get("kind") == "SlurmJob" and not (result and result.get("status") == "ok"):
        slurm = _slurm_state(on_cluster)
    holder = FileLock(result_path.with_suffix(".lock")).holder()
    rep = Path(entry["representation"])
    rep_holder = FileLock(rep.parent / ".locks" / f"{rep.name}.lock").holder()
    if result and result.get("status") == "ok":
        state.state = "done"
    elif holder:
        state.state, state.where = "running", state.where or f"pid {holder['pid']} on {holder['host']}"
    elif rep_holder:
        state.state, state.log = "pretraining", entry["pretrain_log"]
        state.where = state.where or f"pid {rep_holder['pid']} on {rep_holder['host']}"
    elif result and not (_driver_alive(record) and result.get("finished_at", "") < record["started_at"]):
        state.state, state.error = "failed", result.get("error") or "unknown error"
        state.log = result.get("log") or state.log
    elif slurm != "UNKNOWN":
        if slurm in ("PENDING", "REQUEUED", "CONFIGURING", "RESIZING", "SUSPENDED"):
            state.state = "queued"
        elif slurm in ("RUNNING", "COMPLETING"):
            state.state = "running"
        else:  # it ended (COMPLETED, FAILED, TIMEOUT, OUT_OF_MEMORY, CANCELLED...) without a result
            state.state, state.error = "failed", f"cluster job ended {slurm} without a result"
    elif _driver_alive(record) or (on_cluster and _detached(record)):
        state.state = "queued"  # a failed result of an earlier run lands here while it is retried
    else:
        state.state = "stopped"
    return state


def _slurm_state(entry: dict) -> str:
    """SLURM's state of a recorded cluster job (through submitit's sacct reader), or UNKNOWN
    where sacct cannot be asked."""
    try:
        from submitit.slurm.slurm import SlurmJob

        return str(SlurmJob(entry["folder"], entry["job_id"]).state).split()[0]
    except Exception:  # no sacct here, or the job is too old for the accounting database
        return "UNKNOWN"


def _detached(record: dict) -> bool:
    """A submitit run that did not wait: its jobs live on in the cluster's queue."""
    return record["executor"] == "submitit" and sum((record.get("counts") or {}).values()) < len(record["jobs"])


def render(states: list[JobState], records: list[dict], results_dir: Path, show_all: bool = False) -> str:
    """The status as text: a line per run, the counts per state, then the running, pretraining
    and failed jobs (with their error and log), and the queued ones per method."""
    from tabulate import tabulate

    if not records:
        return f"no runs recorded in {results_dir} (the ledger is {Path(results_dir) / 'queue'})"
    lines = []
    for record in records[-5:]:
        alive = "running" if _driver_alive(record) else f"ended {record.get('finished_at') or '(killed)'}"
        lines.append(f"run {record['run']}: {record['executor']}, suite {record['suite']}, "
                     f"{len(record['jobs'])} jobs, started {record['started_at']}, {alive}")
    counts = {s: sum(1 for j in states if j.state == s) for s in STATES}
    lines.append("")
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f"  ({len(states)} jobs)")
    for wanted in ("running", "pretraining", "failed"):
        rows = [j for j in states if j.state == wanted]
        if not rows:
            continue
        lines += ["", wanted.upper()]
        head = ["method", "task", "protocol", "seed", "where" if wanted != "failed" else "error", "log"]
        table = [[j.method, j.task, j.protocol, j.seed, j.where if wanted != "failed" else j.error, _short(j.log)]
                 for j in rows]
        lines.append(tabulate(table, head, tablefmt="plain"))
    for wanted in ("queued", "stopped") + (("done",) if show_all else ()):
        rows = [j for j in states if j.state == wanted]
        if not rows:
            continue
        per_method: dict[str, int] = {}
        for j in rows:
            per_method[j.method] = per_method.get(j.method, 0) + 1
        lines += ["", f"{wanted.upper()}: " + ", ".join(f"{m} {n}" for m, n in per_method.items())]
    if counts["stopped"]:
        lines.append("(stopped: its run ended before it; re-run the same command to finish them)")
    return "\n".join(lines)


def _short(path: str) -> str:
    """``path`` relative to here when it lies below, else as it is."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative
