"""The executors a plan can run on, their ``[executor]`` settings, and the dispatch to them.

- ``inline``: one job after the other in this process (the default).
- ``pool``: worker processes on this machine (:mod:`~benchharness.pool`).
- ``submitit``: cluster jobs through submitit: SLURM, or its local and debug executors
  (:mod:`~benchharness.submitit_executor`).

Every executor writes the same result files into the same store; a run's jobs are recorded in
the :class:`~benchharness.ledger.Ledger` that ``benchharness status`` reads.
"""

from __future__ import annotations

import tomllib
from typing import Any, Callable

from .interfaces import BenchharnessError

EXECUTORS = {"inline": "one job after the other in this process",
             "pool": "worker processes on this machine",
             "submitit": "cluster jobs through submitit (SLURM, or its local/debug executors)"}

_POSITIVE_INT = ("positive integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0)
_NUMBER = ("positive number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0)
_TEXT = ("string", lambda v: isinstance(v, str) and v != "")
_BOOL = ("true or false", lambda v: isinstance(v, bool))
_COMMANDS = ("list of shell commands", lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v))

# key -> (what it means, (type name, check)); `name` is checked on its own
OPTIONS: dict[str, tuple[str, tuple]] = {
    "workers": ("pool: worker processes [one per visible GPU, or 1 on a CPU]; "
                "submitit local/debug: jobs at a time [1]", _POSITIVE_INT),
    "nproc": ("processes per job's training with torch.distributed (torchrun; `run --gpus-per-job`); "
              "inline and submitit [1]", _POSITIVE_INT),
    "cluster": ("submitit: slurm, local or debug [slurm where sbatch exists, else local]",
                ("slurm, local or debug", lambda v: v in ("slurm", "local", "debug"))),
    "partition": ("submitit/SLURM: partition (--partition)", _TEXT),
    "gpus": ("submitit: GPUs per job (--gpus-per-node)", ("integer >= 0", lambda v: isinstance(v, int)
                                                           and not isinstance(v, bool) and v >= 0)),
    "cpus": ("submitit: CPUs per job (--cpus-per-task); also torch's thread count in the job", _POSITIVE_INT),
    "mem_gb": ("submitit: memory per job in GB (--mem)", _NUMBER),
    "timeout_min": ("submitit: time limit per job in minutes (--time) [1440]", _POSITIVE_INT),
    "account": ("submitit/SLURM: account (--account)", _TEXT),
    "qos": ("submitit/SLURM: quality of service (--qos)", _TEXT),
    "constraint": ("submitit/SLURM: node features (--constraint)", _TEXT),
    "array_parallelism": ("submitit/SLURM: array tasks running at once (--array=...%N)", _POSITIVE_INT),
    "setup": ("submitit/SLURM: shell lines run before each job (module load, conda activate)", _COMMANDS),
    "max_num_timeout": ("submitit: resubmissions after preemption or time-out [3]",
                        ("integer >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)),
    "folder": ("submitit: its pickles and job logs [RESULTS/submitit]", _TEXT),
    "wait": ("submitit/SLURM: wait for the jobs and print their results [true]", _BOOL),
    "poll_s": ("submitit/SLURM: seconds between two looks at the queue [30]", _NUMBER),
}


def check_executor(raw: Any, where: str) -> dict[str, Any]:
    """An ``[executor]`` section (or the CLI's options merged into one), checked key by key."""
    if not isinstance(raw, dict):
        raise BenchharnessError(f"{where}: [executor] must be a table, got {raw!r}")
    name = raw.get("name", "inline")
    if name not in EXECUTORS:
        raise BenchharnessError(f"{where}: [executor] name must be one of {sorted(EXECUTORS)}, got {name!r}")
    for key, value in raw.items():
        if key == "name":
            continue
        if key not in OPTIONS:
            raise BenchharnessError(f"{where}: [executor] has no key {key!r}; it takes name, "
                                    f"{', '.join(OPTIONS)} (see `benchharness run --help`)")
        kind, ok = OPTIONS[key][1]
        if not ok(value):
            raise BenchharnessError(f"{where}: [executor] {key} must be a {kind}, got {value!r}")
    return dict(raw)


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from ``--executor-option``: VALUE read as a TOML value (``4``, ``true``,
    ``["module load cuda"]``), else as a plain string (``gpu``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise BenchharnessError(f"--executor-option {text!r}: expected KEY=VALUE, e.g. cluster=local")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed


def run_plan(options: dict[str, Any], plan, runner, log: Callable[[str], None]) -> dict[str, int]:
    """Run ``plan`` on the executor ``options`` name, recording it in the results' ledger;
    counts of done, skipped and failed jobs."""
    from .ledger import Ledger

    name = options.get("name", "inline")
    ledger = Ledger.start(runner, plan, name)
    try:
        if name == "pool":
            from .pool import default_workers, run_pool

            counts = run_pool(plan, runner, options.get("workers") or default_workers(runner.device.type), log)
        elif name == "submitit":
            from .submitit_executor import run_submitit

            counts = run_submitit(plan, runner, options, log, on_submit=ledger.submitted)
        else:
            counts = runner.run(plan)
    except BaseException:
        ledger.finish(None)
        raise
    ledger.finish(counts)
    return counts
