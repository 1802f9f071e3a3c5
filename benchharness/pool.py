"""The ``pool`` executor: a plan's jobs on worker processes of this machine.

Pretraining first, then each representation's first transfer job, then the rest
(:mod:`~benchharness.waves`). Each worker is a :class:`~benchharness.runner.Runner` of its own on the shared results store
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
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

from .interfaces import BenchharnessError
from .runner import Plan, Runner
from .suite import Job
from .waves import run_waves

_RUNNER: Runner | None = None  # the worker process's runner (set by _start_worker)
_MEMO: dict = {}  # the worker's representations, loaded once (Runner.run_job's memo)


def default_workers(device: str) -> int:
    """One worker per visible GPU on CUDA, else 1 (the smoke suite asks for 2 on its 2 cores)."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    return 1


def _start_worker(slots, threads: int, gpu_ids: list[str], results_dir: str, cache_dir: str | None,
                  device: str) -> None:
    slot = slots.get()
    if gpu_ids:  # before torch touches CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_ids[slot % len(gpu_ids)]
    import torch

    torch.set_num_threads(threads)
    from .plugins import get_registry

    global _RUNNER
    tag = f"[worker {slot + 1}]"
    _RUNNER = Runner(get_registry(), Path(results_dir), cache_dir, device,
                     log=lambda msg: print(f"{tag} {msg}", flush=True, file=sys.stderr),
                     progress=None)
    _RUNNER.notify_results = False  # the driver calls the on_result hook (run_waves' on_result)


def _pretrain(plan: Plan, job: Job) -> str | None:
    """Pretrain (or load) ``job``'s representation in this worker; the error, if it failed."""
    return _RUNNER.prepare_representation(plan, job)


def _transfer(plan: Plan, job: Job) -> dict | None:
    """Run one transfer job under its lock; its result, or None when it was done elsewhere."""
    return _RUNNER.run_locked(plan, job, _MEMO)


def visible_gpus() -> list[str]:
    """The GPU ids this process may use: ``CUDA_VISIBLE_DEVICES``'s entries, else 0..N-1."""
    import torch

    listed = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return listed[:torch.cuda.device_count()] or [str(i) for i in range(torch.cuda.device_count())]


def run_pool(plan: Plan, runner: Runner, workers: int, log: Callable[[str], None],
             gpu_ids: list[str] | None = None) -> dict[str, int]:
    """Run ``plan``'s unfinished jobs on ``workers`` processes, in :mod:`~benchharness.waves`
    order; counts as ``Runner.run``'s. Worker k sees GPU ``gpu_ids[k % len(gpu_ids)]`` alone
    (default: the visible GPUs when the run is on CUDA; more workers than GPUs share them)."""
    import torch

    todo, counts = runner.unfinished(plan)
    if not todo:
        return counts
    if gpu_ids is None:
        gpu_ids = visible_gpus() if runner.device.type == "cuda" else []
    gpus = len(gpu_ids)
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")  # no forked torch state in the workers
    slots = context.Manager().Queue()
    for slot in range(workers):
        slots.put(slot)
    log(f"pool: {workers} workers, {threads} thread(s) each" + (f", {gpus} GPU(s)" if gpus else ""))
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(slots, threads, gpu_ids, str(runner.store.root),
                                       str(runner.cache_dir), str(runner.device.type))) as pool:
        try:
            return run_waves(todo, runner, lambda job: pool.submit(_pretrain, plan, job),
                             lambda job: pool.submit(_transfer, plan, job), counts, log)
        except BrokenProcessPool:  # a worker was killed (out of memory?): the pool cannot go on
            raise BenchharnessError("a pool worker died (killed, or out of memory?); the jobs it "
                                    "was running are stored as failed; re-run the same command "
                                    "to run what has no result") from None
