"""What each run was asked to do, for ``benchharness status``.

Every ``benchharness run`` writes ``<results>/queue/<run id>.json``: the executor, the driving
process (host, pid), when it started and finished, and its jobs (where each one's result and log
go, and the representation it needs). A cluster executor adds each job's cluster id and log as it
submits it. Whether a job is done, failed or running is not stored here: ``status`` reads it
from the results and their locks, which every executor keeps the same way.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import atomic


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Ledger:
    """One run's record, rewritten atomically whenever it changes."""

    path: Path
    record: dict[str, Any]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def start(cls, runner, plan, executor: str) -> "Ledger":
        """Record a run of ``plan``'s jobs on ``executor`` as started by this process."""
        root = runner.store.root
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{socket.gethostname()}-{os.getpid()}"
        jobs = []
        for job in plan.jobs:
            result = runner.store.path_for(job)
            rep = runner.representation_dir(job)
            jobs.append({"result": str(result), "log": str(result.with_suffix(".log")),
                         "method": job.method, "task": job.task, "protocol": job.protocol,
                         "seed": job.seed, "config_hash": job.config_hash,
                         "representation_key": job.representation_key, "representation": str(rep),
                         "pretrain_log": str(rep.parent / f"{rep.name}.log")})
        record = {"run": run_id, "executor": executor, "suite": plan.suite.name,
                  "host": socket.gethostname(), "pid": os.getpid(), "started_at": _now(),
                  "finished_at": None, "counts": None, "jobs": jobs, "cluster": {}}
        ledger = cls(Path(root) / "queue" / f"{run_id}.json", record)
        ledger._save()
        return ledger

    def submitted(self, job, kind: str, handle) -> None:
        """Note that ``job``'s step ``kind`` (pretrain or transfer) became cluster job ``handle``."""
        key = f"{kind}:{job.representation_key if kind == 'pretrain' else job.config_hash}"
        with self._lock:
            self.record["cluster"][key] = {"job_id": str(handle.job_id), "log": str(handle.paths.stdout),
                                           "method": job.method, "kind": type(handle).__name__,
                                           "folder": str(handle.paths.folder)}
            self._save()

    def finish(self, counts: dict[str, int] | None) -> None:
        """The driver is done (``counts``) or stopped by an error or a kill (None)."""
        with self._lock:
            self.record.update(finished_at=_now(), counts=counts)
            self._save()

    def _save(self) -> None:
        atomic.write_json(self.path, self.record)


def read_ledgers(results_dir: Path) -> list[dict[str, Any]]:
    """Every run's record under ``results_dir``, oldest first (unreadable files skipped)."""
    records = []
    for path in sorted((Path(results_dir) / "queue").glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return sorted(records, key=lambda r: r.get("started_at", ""))
