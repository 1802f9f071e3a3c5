"""The ``pool`` executor: a plan's jobs on worker processes of this machine.

Pretraining before transfer, as a cluster would run them: every representation that is not
cached yet is pretrained first (one per worker at a time); each one's first transfer job (which
computes and caches the frozen features) starts when it is ready, and its other jobs when that
one is done, so that two workers do not compute the same features.
Each worker is a :class:`~benchharness.runner.Runner` of its own on the shared results store
and cache, so the store's locks keep two workers (or two drivers) from running a job twice and
a killed run resumes like an inline one.

On a CPU the machine's threads are divided among the workers (``torch.set_num_threads``): a
2-core machine runs two single-threaded jobs side by side, which keeps both cores busy through
the single-threaded parts of a job (Python, data preparation, evaluation) that leave one idle
under ``inline``. On GPUs each worker sees one device (``CUDA_VISIBLE_DEVICES``, round robin).
A job's numbers depend on the thread count it ran with (float sums in another order), as they
do inline; the same executor and workers give the same values.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable

from .runner import Plan, Runner
from .suite import Job

_RUNNER: Runner | None = None  # the worker process's runner (set by _start_worker)
_MEMO: dict = {}  # the worker's representations, loaded once (Runner.run_job's memo)


def default_workers(device: str) -> int:
    """One worker per visible GPU on CUDA, else 1 (the smoke suite asks for 2 on its 2 cores)."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    return 1


def _start_worker(slots, threads: int, gpus: int, results_dir: str, cache_dir: str | None,
                  device: str) -> None:
    slot = slots.get()
    if gpus:  # before torch touches CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    import torch

    torch.set_num_threads(threads)
    from .plugins import get_registry

    global _RUNNER
    tag = f"[worker {slot + 1}]"
    _RUNNER = Runner(get_registry(), Path(results_dir), cache_dir, device,
                     log=lambda msg: print(f"{tag} {msg}", flush=True, file=sys.stderr),
                     progress=None)


def _pretrain(plan: Plan, job: Job) -> str | None:
    """Pretrain (or load) ``job``'s representation in this worker; the error, if it failed."""
    try:
        _RUNNER.representation(plan, job)
    except Exception as exc:  # every job of this method will be stored as failed with it
        return f"{type(exc).__name__}: {exc}"
    return None


def _transfer(plan: Plan, job: Job, failed: dict[str, str]) -> dict | None:
    """Run one transfer job under its lock; its result, or None when it was done elsewhere."""
    from .locks import FileLock

    _MEMO.update({key: RuntimeError(f"pretraining failed: {error}") for key, error in failed.items()})
    lock = FileLock(_RUNNER.store.path_for(job).with_suffix(".lock"))
    lock.acquire()  # another driver's worker may hold it: wait, then see whether it finished
    try:
        if _RUNNER.store.is_done(job):
            return None
        return _RUNNER.run_job(plan, job, _MEMO)
    finally:
        lock.release()


def run_pool(plan: Plan, runner: Runner, workers: int, log: Callable[[str], None]) -> dict[str, int]:
    """Run ``plan``'s unfinished jobs on ``workers`` processes; counts as ``Runner.run``'s.

    Every representation still to make is pretrained first; a representation's first transfer
    job (the one that computes and caches its frozen features) starts when it is ready, the
    rest of its jobs when that one is done, so workers do not compute the same features twice.
    """
    import torch

    todo, counts = runner.unfinished(plan)
    if not todo:
        return counts
    gpus = torch.cuda.device_count() if runner.device.type == "cuda" else 0
    threads = 1 if gpus else max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")  # no forked torch state in the workers
    slots = context.Manager().Queue()
    for slot in range(workers):
        slots.put(slot)
    log(f"pool: {workers} workers, {threads} thread(s) each" + (f", {gpus} GPU(s)" if gpus else ""))
    by_rep: dict[str, list[Job]] = {}
    for job in todo:
        by_rep.setdefault(job.representation_key, []).append(job)
    failed: dict[str, str] = {}
    futures: dict[Future, tuple[str, object]] = {}
    finished = 0
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(slots, threads, gpus, str(runner.store.root),
                                       str(runner.cache_dir), str(runner.device.type))) as pool:
        def submit(jobs):
            for job in jobs:
                futures[pool.submit(_transfer, plan, job, dict(failed))] = ("job", job)

        for key, jobs in by_rep.items():
            if (runner.representation_dir(jobs[0]) / "representation.json").is_file():
                submit(jobs[:1])
            else:
                futures[pool.submit(_pretrain, plan, jobs[0])] = ("pretrain", key)
        while futures:
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                kind, what = futures.pop(future)
                if kind == "pretrain":
                    error = future.result()
                    if error:
                        failed[what] = error
                        log(f"pretraining {by_rep[what][0].method} FAILED: {error}")
                    submit(by_rep[what][:1])
                    continue
                job, result = what, future.result()
                if job is by_rep[job.representation_key][0]:
                    submit(by_rep[job.representation_key][1:])
                finished += 1
                tag = f"[{finished}/{len(todo)}] {job.method} -> {job.task} {job.protocol} seed {job.seed}"
                if result is None:
                    counts["skipped"] += 1
                    log(f"{tag}: finished by another run")
                elif result["status"] == "ok":
                    counts["done"] += 1
                    log(f"{tag}: {result['metric']} = {result['value']:.2f}  ({result['wall_seconds']:.0f}s)")
                else:
                    counts["failed"] += 1
                    log(f"{tag}: FAILED: {result['error']}")
    return counts
