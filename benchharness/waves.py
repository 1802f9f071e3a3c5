"""The order in which the executors that run jobs side by side start them.

Pretraining before transfer, as a cluster runs them: every representation that is not cached yet
is pretrained first; each representation's first transfer job (the one that computes and caches
its frozen features) starts when it is ready, and its other jobs when that one is done, so that
two workers never compute the same features. The executors (``pool``, ``submitit``'s local and
debug clusters) differ only in how they start a step: each hands :func:`run_waves` two functions
that return a :class:`concurrent.futures.Future`.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Callable

from .suite import Job

StartPretraining = Callable[[Job], Future]  # -> Future[str | None]: the error, if it failed
StartTransfer = Callable[[Job], Future]  # -> Future[dict | None]: the result, None if done elsewhere


def by_representation(jobs: list[Job]) -> dict[str, list[Job]]:
    """``jobs`` grouped by the representation they transfer, in plan order."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.representation_key, []).append(job)
    return groups


def count_result(counts: dict[str, int], tag: str, result: dict | None, log: Callable[[str], None]) -> None:
    """Count and log one job's outcome: ``result`` None (finished by another run), ok, or failed."""
    if result is None:
        counts["skipped"] += 1
        log(f"{tag}: finished by another run")
    elif result["status"] == "ok":
        counts["done"] += 1
        log(f"{tag}: {result['metric']} = {result['value']:.2f}  ({result.get('wall_seconds', 0):.0f}s)")
    else:
        counts["failed"] += 1
        log(f"{tag}: FAILED: {result['error']}")


def run_waves(todo: list[Job], runner, start_pretraining: StartPretraining, start_transfer: StartTransfer,
              counts: dict[str, int], log: Callable[[str], None]) -> dict[str, int]:
    """Start ``todo``'s steps in wave order as their predecessors finish; ``counts`` (done,
    skipped, failed) updated and returned.

    ``runner`` (the driver's :class:`~benchharness.runner.Runner`) says which representations
    are cached, records a pretraining or a job whose process died (so that the transfer jobs,
    ``status`` and the next run see it), and calls the on_result hook in this, the driving,
    process for every job that came back with a result.
    """
    groups = by_representation(todo)
    futures: dict[Future, tuple[str, object]] = {}
    finished = 0

    def start(jobs: list[Job]) -> None:
        for job in jobs:
            futures[start_transfer(job)] = ("job", job)

    for key, jobs in groups.items():
        if runner.is_cached(jobs[0]):
            start(jobs[:1])
        else:
            futures[start_pretraining(jobs[0])] = ("pretrain", key)
    while futures:
        done, _ = wait(futures, return_when=FIRST_COMPLETED)
        for future in done:
            kind, what = futures.pop(future)
            crash = future.exception()  # the worker or cluster job died (killed, out of memory)
            if kind == "pretrain":
                error = f"its process died: {type(crash).__name__}: {crash}" if crash else future.result()
                if error:
                    log(f"pretraining {groups[what][0].method} FAILED: {error}")
                    if crash:
                        runner.record_pretraining_failure(groups[what][0], error)
                start(groups[what][:1])
                continue
            job = what
            if crash:
                result = runner.record_death(job, f"its process died: {type(crash).__name__}: {crash}")
            else:
                result = future.result()
            if job is groups[job.representation_key][0]:
                start(groups[job.representation_key][1:])
            finished += 1
            count_result(counts, f"[{finished}/{len(todo)}] {job.method} -> {job.task} {job.protocol} "
                                 f"seed {job.seed}", result, log)
            if result is not None:
                runner.notify_stored(job, result)
    return counts
