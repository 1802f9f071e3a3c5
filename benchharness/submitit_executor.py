"""The ``submitit`` executor: a plan's jobs as cluster jobs through submitit (SLURM, or its local
and debug executors).

Each step of the plan (pretraining one representation, or one transfer job) is one call of
:class:`ClusterStep` in a job of its own, which builds a :class:`~benchharness.runner.Runner`
on the shared results store and cache: the store's locks keep two jobs (or two drivers) from
computing the same thing, and a step whose result exists returns at once.

- ``cluster = "slurm"``: one job array per wave (pretraining; each representation's first
  transfer job, which caches its features; the rest), each wave depending on the one before
  (``afterany``: a failed pretraining fails its transfer jobs with its error instead of leaving
  them pending forever).
- ``cluster = "local"`` (submitit's local executor: one process per job on this machine) and
  ``"debug"`` (in this process): the same waves, started by the driver as their predecessors
  finish (:mod:`~benchharness.waves`), at most ``workers`` at a time.

:class:`ClusterStep` is checkpointable: a job that SLURM preempts or times out is resubmitted by
submitit with the same arguments (at most ``max_num_timeout`` times) and resumes from the
pretraining's epoch checkpoints; a transfer job starts over.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from .interfaces import BenchharnessError
from .runner import Plan, Runner
from .suite import Job
from .waves import by_representation, count_result, run_waves

# [executor] key -> submitit's parameter (AutoExecutor passes slurm_* to SLURM only); the keys
# themselves are described and checked in executors.OPTIONS
PARAMETERS = {"partition": "slurm_partition", "gpus": "gpus_per_node", "cpus": "cpus_per_task",
              "mem_gb": "mem_gb", "timeout_min": "timeout_min", "account": "slurm_account",
              "qos": "slurm_qos", "constraint": "slurm_constraint",
              "array_parallelism": "slurm_array_parallelism", "setup": "slurm_setup"}
DEFAULT_TIMEOUT_MIN = 24 * 60  # submitit's own default (local: 2 minutes) would kill real jobs


class ClusterStep:
    """One step of a plan in a cluster job: ``"pretrain"`` (the error, if it failed) or
    ``"transfer"`` (a summary of the stored result; None when it was done elsewhere).

    It carries the plan and where the store is, nothing else: the job builds its own registry
    and runner. ``device`` is the device as the user asked for it (``auto`` is resolved on the
    node, not on the login node); ``threads`` sets torch's threads when given.
    """

    def __init__(self, plan: Plan, results_dir: str, cache_dir: str, device: str, threads: int | None,
                 nproc: int = 1):
        self.plan = plan
        self.results_dir = results_dir
        self.cache_dir = cache_dir
        self.device = device
        self.threads = threads
        self.nproc = nproc  # processes per job's training (torchrun inside the cluster job)

    def __call__(self, kind: str, job: Job):
        import torch

        from .plugins import get_registry

        if self.threads:
            torch.set_num_threads(self.threads)
        runner = Runner(get_registry(), Path(self.results_dir), self.cache_dir, self.device, progress=None)
        runner.nproc = self.nproc
        runner.notify_results = False  # the driver calls the on_result hook when this returns
        if kind == "pretrain":
            return runner.prepare_representation(self.plan, job)
        result = runner.run_locked(self.plan, job, {})
        if result is None:
            return None
        return {key: result.get(key) for key in ("status", "metric", "value", "error", "wall_seconds")}

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit calls this on preemption or time-out: resubmit the same step, which resumes
        from the epoch checkpoints its first run left (pretraining's ``.partial``)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def make_executor(options: dict, results_dir: Path, device: str = "cpu"):
    """The submitit executor that ``options`` (the ``[executor]`` section) describe."""
    try:
        import submitit
    except ImportError:
        raise BenchharnessError("the submitit executor needs the submitit package "
                                "(a dependency of benchharness): pip install submitit") from None
    cluster = options.get("cluster")  # checked by executors.check_executor
    folder = Path(options.get("folder") or Path(results_dir) / "submitit") / "%j"
    retries = int(options.get("max_num_timeout", 3))
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=retries,
                                      local_max_num_timeout=retries)
    params = {"timeout_min": DEFAULT_TIMEOUT_MIN}
    params.update({PARAMETERS[key]: value for key, value in options.items() if key in PARAMETERS})
    if "gpus" not in options and (executor.cluster == "slurm" and int(options.get("nproc", 1)) > 1
                                  or executor.cluster == "local" and device == "cuda"):
        # one GPU per torchrun process; submitit's local executor hides the GPUs it is not asked for
        params["gpus_per_node"] = int(options.get("nproc", 1))
    if "mem_gb" in params:  # submitit checks the type; TOML gives 16 for 16.0
        params["mem_gb"] = float(params["mem_gb"])
    executor.update_parameters(**params)
    return executor


def run_submitit(plan: Plan, runner: Runner, options: dict, log: Callable[[str], None],
                 on_submit: Callable[[Job, str, Any], None] | None = None) -> dict[str, int]:
    """Run ``plan``'s unfinished jobs as submitit jobs; counts as ``Runner.run``'s.

    ``on_submit(job, kind, submitit_job)`` is told of every job handed to the cluster (the
    ledger records its id and log for ``benchharness status``).
    """
    import torch

    todo, counts = runner.unfinished(plan)
    if not todo:
        return counts
    executor = make_executor(options, runner.store.root, runner.device.type)
    cluster = executor.cluster
    workers = 1 if cluster == "debug" else int(options.get("workers", 1))
    threads = options.get("cpus") or (None if cluster == "slurm" else max(1, torch.get_num_threads() // workers))
    nproc = int(options.get("nproc", 1))
    step = ClusterStep(plan, str(runner.store.root), str(runner.cache_dir), runner.requested_device, threads,
                       nproc)
    notify = on_submit or (lambda job, kind, handle: None)
    log(f"submitit: cluster {cluster}, logs in {Path(str(executor.folder)).parent}"
        + (f", {workers} job(s) at a time" if cluster != "slurm" else ""))
    if cluster == "slurm":
        return _slurm_waves(executor, step, plan, runner, todo, counts, options, log, notify)

    live: set = set()  # the submitit jobs in flight, cancelled if the driver is interrupted

    def start(kind: str, job: Job) -> Future:
        def submit_and_wait():
            handle = executor.submit(step, kind, job)
            live.add(handle)
            notify(job, kind, handle)
            try:
                return handle.result()
            finally:
                live.discard(handle)
        return threads_pool.submit(submit_and_wait)

    threads_pool = ThreadPoolExecutor(workers)  # a thread waits on each job in flight
    try:
        return run_waves(todo, runner, lambda job: start("pretrain", job), lambda job: start("transfer", job),
                         counts, log)
    except BaseException:  # Ctrl-C or an error: start nothing more, stop what runs
        threads_pool.shutdown(wait=False, cancel_futures=True)
        for handle in list(live):
            handle.cancel(check=False)
        raise
    finally:
        threads_pool.shutdown(wait=True)


def _slurm_waves(executor, step: ClusterStep, plan: Plan, runner: Runner, todo: list[Job],
                 counts: dict[str, int], options: dict, log, notify) -> dict[str, int]:
    """Submit the three waves as job arrays chained by ``afterany`` dependencies; then wait for
    them (unless ``wait = false``) and count their results."""
    groups = by_representation(todo)
    waves = [("pretrain", [jobs[0] for jobs in groups.values() if not runner.is_cached(jobs[0])]),
             ("transfer", [jobs[0] for jobs in groups.values()]),
             ("transfer", [job for jobs in groups.values() for job in jobs[1:]])]
    previous, handles = None, []
    for number, (kind, jobs) in enumerate(waves, 1):
        if not jobs:
            continue
        extra = {"dependency": f"afterany:{previous}"} if previous else {}
        executor.update_parameters(name=f"bh-{plan.suite.name}-wave{number}",
                                   slurm_additional_parameters=extra)
        submitted = executor.map_array(step, [kind] * len(jobs), jobs)
        for job, handle in zip(jobs, submitted):
            notify(job, kind, handle)
        previous = submitted[0].job_id.split("_")[0]
        handles += [(kind, job, handle) for job, handle in zip(jobs, submitted)]
        log(f"wave {number}: {len(jobs)} {kind} job(s) as array {previous}")
    if not options.get("wait", True):
        log("not waiting (wait = false): `benchharness status` follows them, re-running the "
            "command collects what is missing")
        return counts
    poll = float(options.get("poll_s", 30))
    pending = [h for h in handles if h[0] == "transfer"]
    while pending:
        still = []
        for kind, job, handle in pending:
            if not handle.done():
                still.append((kind, job, handle))
                continue
            try:
                result = handle.result()
            except Exception as exc:  # the cluster job itself died
                result = runner.record_death(job, f"its cluster job {handle.job_id} died: "
                                                  f"{type(exc).__name__}: {exc} (log: {handle.paths.stdout})")
            count_result(counts, f"{job.method} -> {job.task} {job.protocol} seed {job.seed}", result, log)
            if result is not None:
                runner.notify_stored(job, result)  # in the driver, never in the cluster job
        pending = still
        if pending:
            time.sleep(poll)
    return counts
