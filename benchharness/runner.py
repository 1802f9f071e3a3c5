"""Jobs -> representations (cached) -> transfer -> evaluate -> results store.

Everything a job needs is passed in; there is no module-level state, so an executor plugin can
later hand jobs to a cluster without a rewrite. A job is a pure function of its configuration
that writes one result file; finished jobs are skipped on a re-run, so killing a run loses at
most the job in flight.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import atomic
from . import ddp_job
from .data.voc.check import ensure_devkit
from .data.voc.devkit import find_devkit
from .data.voc.identity import DataIdentity, identify, synthetic_recipe
from .export import export_predictions
from .interfaces import BenchharnessError, RunContext
from .locks import FileLock
from .plugins import Registry
from .representation import Representation
from .results import ResultStore, versions
from .selection import select
from .suite import (Job, Suite, check_schedule_fraction, config_hash, file_digest, scale_schedule,
                    split_method_spec)
from .tasks.settings import SCHEDULE_FRACTION_KEY


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchharnessError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(name)


def progress_bar(iterable, **kwargs):
    """The default progress reporter: tqdm on stderr when it is a terminal."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("disable", None)  # None: hide when stderr is not a terminal
    return tqdm(iterable, **kwargs)


def data_identity(data_root: Path) -> str:
    """What the data is, for representation cache keys: the synthetic world's recipe, or the
    resolved path (methods pretrain on what lies under the root: source/, unlabelled/, clips/)."""
    return synthetic_recipe(data_root) or str(Path(data_root).resolve())


DEFAULT_DATA_ROOT = "data/synthetic-small"


def _may_generate_into(root: Path) -> bool:
    """True where a synthetic world may be written: a missing or empty folder, or an
    unfinished world of ours (``world.json`` without ``.complete``)."""
    if not root.exists():
        return True
    if not root.is_dir():
        return False
    return (root / "world.json").is_file() or not any(root.iterdir())


def prepare_data_root(suite: Suite, override: str | None, log: Callable[[str], None]) -> Path:
    """The data root to use, after checking that it holds PASCAL VOC in one of the accepted
    layouts (:data:`~benchharness.data.voc.devkit.LAYOUTS`) and logging which one was found.

    A root the user gives (``override``) is only read: never written into, never filled with a
    synthetic world. The synthetic world of a suite with a ``[synthetic]`` section is generated
    (or given its video clips and camera-motion sequences) only at the suite's own default
    ``data_root``, which ``override`` may also name. Raises DataError listing the layouts when no VOC is found.
    """
    default = Path(suite.data_root or DEFAULT_DATA_ROOT)
    root = Path(override) if override else default
    ours = suite.synthetic is not None and root.resolve() == default.resolve()
    if ours and not (root / ".complete").is_file() and _may_generate_into(root):
        from .data.synthetic.world import generate_world

        log(f"generating the synthetic world in {root} (seed {suite.synthetic.get('seed', 0)}, "
            f"size {suite.synthetic.get('size', 'small')})")
        generate_world(root, seed=int(suite.synthetic.get("seed", 0)),
                       size=str(suite.synthetic.get("size", "small")), progress=progress_bar)
    elif ours and (root / ".complete").is_file():  # a world generated before worlds had these
        from .data.synthetic.clips import ensure_clips
        from .data.synthetic.egomotion import ensure_egomotion
        from .data.synthetic.proposals import ensure_proposals

        if ensure_clips(root, progress_bar):
            log(f"generated the current video clips of the synthetic world in {root}")
        if ensure_egomotion(root, progress_bar):
            log(f"added the camera-motion sequences to the synthetic world in {root}")
        if ensure_proposals(root, progress_bar):
            log(f"added the selective-search proposals to the synthetic world in {root}")
    for line in find_devkit(root).describe(root):
        log(line)
    return root


@dataclass
class Plan:
    """The resolved grid of a run."""

    suite: Suite
    data_root: Path
    jobs: list[Job]
    method_configs: dict[str, dict] = field(default_factory=dict)  # representation key -> config
    data: DataIdentity | None = None  # recorded in every result (``data``)
    schedule_fraction: float = 1.0  # recorded in every result


def plan(suite: Suite, registry: Registry, data_root: Path, methods: list[str] | None = None,
         tasks: list[str] | None = None, protocols: list[str] | None = None,
         seeds: int | None = None, task_overrides: dict | None = None,
         schedule_fraction: float = 1.0) -> Plan:
    """Expand the suite (filtered by the CLI's choices) into jobs; checks names
    (:func:`~benchharness.selection.select`) and data first.

    ``task_overrides`` (e.g. ``{"rescale": True}``) are added to every task's settings.
    ``schedule_fraction`` F in (0, 1] multiplies every schedule count
    (:data:`~benchharness.suite.SCHEDULE_KEYS`) of the method and task sections by F (at least
    1); tasks get F as ``schedule_fraction`` and scale their own defaults with it. F and the
    data's identity (split fingerprint included) are part of every job's hash.
    """
    fraction = check_schedule_fraction(schedule_fraction)
    chosen = select(suite, registry, methods, tasks, protocols, seeds)
    registered_methods = registry.methods()
    datasets = registry.datasets()
    ident = data_identity(data_root)
    data = identify(data_root)
    jobs, method_configs = [], {}
    years = set()
    for task_name, task_protocols in chosen.protocols.items():
        task = registry.get("tasks", task_name)
        for ds in task.datasets:  # stop before spending compute when data is missing
            if ds in datasets:
                datasets[ds].locate(data_root)
            if ds.startswith("voc"):
                years.add(ds.removeprefix("voc"))
        for choice in chosen.methods:
            resolved, arg = choice.resolved, choice.arg
            method = registered_methods[resolved.plugin]
            mcfg = scale_schedule(dict(resolved.settings), fraction)
            arg_id = None
            if arg:
                p = Path(arg).expanduser()
                arg_id = file_digest(p) if p.is_file() else str(p.resolve())
                if method.argument_files:
                    arg_id = [arg_id, *(file_digest(f) for f in method.argument_files(arg, mcfg))]
            keyed = {"method": resolved.name, "arg": arg_id, "config": mcfg,
                     "backbone": suite.backbone, "data": ident}
            if resolved.base is not None:  # a variant (a registered method's key is unchanged)
                keyed["plugin"] = resolved.plugin
            rep_key = config_hash(keyed)
            method_configs[rep_key] = mcfg
            tcfg = {**scale_schedule(suite.task_config.get(task_name, {}), fraction),
                    **(task_overrides or {})}
            if fraction != 1:
                tcfg[SCHEDULE_FRACTION_KEY] = fraction
            for protocol in task_protocols:
                for seed in range(seeds or suite.seeds_for(task_name, protocol)):
                    h = config_hash({"rep": rep_key, "task": task_name, "protocol": protocol,
                                     "config": tcfg, "seed": seed, "data": data.key})
                    jobs.append(Job(suite.name, choice.spec, task_name, protocol, seed, rep_key, h,
                                    tcfg, resolved.base, resolved.plugin))
    if years:  # structure, split files and annotations, every problem listed at once
        ensure_devkit(data_root, sorted(years), quick=True)
    return Plan(suite, data_root, jobs, method_configs, data, fraction)


class Runner:
    """Runs a plan's jobs in this process, caching representations on disk."""

    nproc = 1  # processes per job's training (ddp_job: torchrun); the CLI's --gpus-per-job
    # False in a pool worker or cluster job: there the driver calls the on_result hook (trackers
    # run in the driving process only), through notify_stored when the result comes back
    notify_results = True

    def __init__(self, registry: Registry, results_dir: Path, cache_dir: Path | None = None,
                 device: str = "auto", log: Callable[[str], None] | None = None,
                 progress=progress_bar):
        self.registry = registry
        self.store = ResultStore(results_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else Path(results_dir) / "cache"
        self.requested_device = device  # as asked: a cluster job resolves `auto` on its node
        self.device = resolve_device(device)
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.progress = progress

    @contextlib.contextmanager
    def logging_to(self, path: Path):
        """Also append every log line (time-stamped) to ``path`` while inside: each job and each
        pretraining has a log file of its own, which ``benchharness status`` points to."""
        path.parent.mkdir(parents=True, exist_ok=True)
        forward = self.log
        with open(path, "a", encoding="utf-8") as file:
            def log(msg: str) -> None:
                forward(msg)
                file.write(f"{dt.datetime.now().isoformat(timespec='seconds')} {msg}\n")
                file.flush()

            self.log = log
            try:
                yield log
            finally:
                self.log = forward

    def context(self, plan: Plan, seed: int, config: dict, method_arg: str | None = None) -> RunContext:
        """The RunContext handed to a method or task."""
        backbone = self.registry.get("backbones", plan.suite.backbone)
        return RunContext(device=self.device, seed=seed, data_root=plan.data_root,
                          cache_dir=self.cache_dir, backbone=plan.suite.backbone, config=config,
                          method_arg=method_arg, progress=self.progress, log=self.log,
                          backbone_factory=backbone.build)

    def representation_dir(self, job: Job) -> Path:
        """Where the representation of ``job``'s method configuration is cached."""
        label = re.sub(r"[^A-Za-z0-9._+-]+", "_", job.method)
        return self.cache_dir / "representations" / f"{label}-{job.representation_key}"

    def representation(self, plan: Plan, job: Job) -> tuple[Representation, bool]:
        """Load the cached representation of ``job``'s method, or pretrain and cache it.

        A lock per method configuration keeps two runs from pretraining the same thing: the
        second waits and then loads what the first stored. Pretraining state is checkpointed
        every epoch under ``.partial/`` so that a killed pretraining resumes.
        """
        directory = self.representation_dir(job)
        if self.is_cached(job):
            return Representation.load(directory), True
        lock = FileLock(directory.parent / ".locks" / f"{directory.name}.lock")
        if not lock.try_acquire():
            self.log(f"waiting for another run to finish pretraining {job.method}")
            lock.acquire()
        try:
            with self.logging_to(directory.parent / f"{directory.name}.log") as log:
                try:
                    return self._pretrain_locked(plan, job, directory)
                except Exception:
                    log(traceback.format_exc())
                    raise
        finally:
            lock.release()

    def _pretrain_locked(self, plan: Plan, job: Job, directory: Path) -> tuple[Representation, bool]:
        if (directory / "representation.json").is_file():
            return Representation.load(directory), True
        _, arg = split_method_spec(job.method_spec)
        method = self.registry.get("methods", job.registered_method)
        mcfg = plan.method_configs[job.representation_key]
        ctx = self.context(plan, int(mcfg.get("seed", 0)), mcfg, arg)
        ctx.state_dir = directory.parent / ".partial" / directory.name
        self.log(f"pretraining {job.method} ({method.group}) on {self.device}")
        start = time.perf_counter()
        rep = ddp_job.pretrain(method, ctx, self.nproc)
        rep.meta.update({"method": job.method, "base": job.base,
                         "group": mcfg.get("group", method.group),
                         "config_hash": job.representation_key, "config": mcfg,
                         "pretrain_seconds": time.perf_counter() - start,
                         "device": str(self.device), "backbone": plan.suite.backbone})
        rep.save(directory)
        shutil.rmtree(ctx.state_dir, ignore_errors=True)
        self.failure_file(job).unlink(missing_ok=True)
        return rep, False

    def is_cached(self, job: Job) -> bool:
        """Whether ``job``'s representation is in the cache."""
        return (self.representation_dir(job) / "representation.json").is_file()

    def record_pretraining_failure(self, job: Job, error: str, trace: str = "") -> None:
        """Record that ``job``'s representation could not be made, for the transfer jobs of
        every process (:meth:`run_locked`)."""
        atomic.write_json(self.failure_file(job), {"error": error, "traceback": trace})

    def record_death(self, job: Job, error: str) -> dict | None:
        """Store a failed result for a job whose process died before storing one (so that
        ``status`` and the leaderboard show it, and the next run runs it again); returns the
        stored result, or None when another process finished it meanwhile."""
        stored = self.store.read(job)
        if stored is not None and stored.get("status") == "ok":
            return None
        result = {"method": job.method, "method_spec": job.method_spec, "task": job.task,
                  "protocol": job.protocol, "seed": job.seed, "suite": job.suite,
                  "config_hash": job.config_hash, "representation_key": job.representation_key,
                  "status": "failed", "error": error, "metric": None, "value": None,
                  "log": str(self.store.path_for(job).with_suffix(".log")),
                  "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        self.store.write(job, result)
        return result

    def failure_file(self, job: Job) -> Path:
        """Where a failed pretraining of ``job``'s representation is recorded, so that the
        transfer jobs of another process (a pool worker, a cluster job) fail with its error
        instead of pretraining again."""
        directory = self.representation_dir(job)
        return directory.parent / f"{directory.name}.failed.json"

    def prepare_representation(self, plan: Plan, job: Job) -> str | None:
        """Pretrain (or find cached) ``job``'s representation; the error if that failed, which is
        also recorded in :meth:`failure_file` for the transfer jobs that follow."""
        failure = self.failure_file(job)
        try:
            self.representation(plan, job)
        except Exception as exc:  # every job of this method will be stored as failed with it
            error = f"{type(exc).__name__}: {exc}"
            self.record_pretraining_failure(job, error, traceback.format_exc())
            return error
        failure.unlink(missing_ok=True)
        return None

    def run_locked(self, plan: Plan, job: Job, memo: dict) -> dict | None:
        """Run one job under its result lock, waiting while another process holds it; its
        result, or None when it was finished elsewhere. A pretraining that failed in another
        process (:meth:`prepare_representation`) fails the job with that error."""
        failure = self.failure_file(job)
        if job.representation_key not in memo and failure.is_file() and not self.is_cached(job):
            error = json.loads(failure.read_text())["error"]
            memo[job.representation_key] = RuntimeError(f"pretraining failed: {error}")
        lock = FileLock(self.store.path_for(job).with_suffix(".lock"))
        lock.acquire()
        try:
            if self.store.is_done(job):
                return None
            return self.run_job(plan, job, memo)
        finally:
            lock.release()

    def unfinished(self, plan: Plan) -> tuple[list[Job], dict[str, int]]:
        """The plan's jobs without a stored result, and the counts of done, skipped and failed
        jobs an executor starts from (the finished ones counted as skipped, and logged)."""
        todo = [j for j in plan.jobs if not self.store.is_done(j)]
        counts = {"done": 0, "skipped": len(plan.jobs) - len(todo), "failed": 0}
        if counts["skipped"]:
            self.log(f"{counts['skipped']} of {len(plan.jobs)} jobs already finished; skipping them")
        return todo, counts

    def run(self, plan: Plan) -> dict[str, int]:
        """Run every unfinished job; returns counts of done, skipped and failed jobs.

        A job another process is running (its lock is held) is put aside and waited for at the
        end, so two runs on one results directory share the grid without computing a job twice.
        """
        todo, counts = self.unfinished(plan)
        memo: dict[str, tuple[Representation, bool] | BaseException] = {}
        deferred = []
        for i, job in enumerate(todo, 1):
            lock = FileLock(self.store.path_for(job).with_suffix(".lock"))
            if not lock.try_acquire():
                deferred.append((job, lock))
                continue
            self._run_locked(plan, job, lock, memo, counts, f"[{i}/{len(todo)}]")
        for job, lock in deferred:
            if not self.store.is_done(job):
                self.log(f"waiting for another run's job {job.method} -> {job.task} {job.protocol}")
                lock.acquire()
            else:
                lock = None
            self._run_locked(plan, job, lock, memo, counts, "[deferred]")
        return counts

    def _run_locked(self, plan, job, lock, memo, counts, tag) -> None:
        try:
            if self.store.is_done(job):  # another run finished it meanwhile
                counts["skipped"] += 1
                return
            self.log(f"{tag} {job.method} -> {job.task} {job.protocol} seed {job.seed}")
            result = self.run_job(plan, job, memo)
            counts["done" if result["status"] == "ok" else "failed"] += 1
        finally:
            if lock is not None:
                lock.release()

    def run_job(self, plan: Plan, job: Job, memo: dict) -> dict:
        """Run one job and store its result (a failure is stored as a failed result); its log
        lines also go to the job's log file beside the result (``log`` in the result)."""
        log_file = self.store.path_for(job).with_suffix(".log")
        with self.logging_to(log_file):
            result = self._run_job(plan, job, memo, log_file)
        if result.get("traceback"):  # in the job's log only; the console has the error's line
            with open(log_file, "a", encoding="utf-8") as file:
                file.write(result["traceback"])
        if self.notify_results:
            self.notify(result)
        return result

    def notify(self, result: dict) -> None:
        """Call every plugin's ``benchharness_on_result`` with ``result``; log their errors."""
        for err in self.registry.notify_result(result):
            self.log(f"    on_result hook error: {err}")

    def notify_stored(self, job: Job, summary: dict) -> None:
        """In the driver, :meth:`notify` of a job another process ran: its stored result, or,
        when the job died before storing one, ``summary`` (what came back) with the job's ids."""
        result = self.store.read(job)
        if result is None or result.get("status") != summary.get("status"):
            result = {"method": job.method, "method_spec": job.method_spec, "task": job.task,
                      "protocol": job.protocol, "seed": job.seed, "suite": job.suite,
                      "config_hash": job.config_hash, "representation_key": job.representation_key,
                      **summary}
        self.notify(result)

    def _run_job(self, plan: Plan, job: Job, memo: dict, log_file: Path) -> dict:
        start = time.perf_counter()
        rescaled = bool(job.task_config.get("rescale"))
        base = {"method": job.method + (" (rescaled)" if rescaled else ""), "rescaled": rescaled,
                "method_spec": job.method_spec, "base": job.base,
                # the settings behind representation_key and config_hash, so that the leaderboard
                # can name what differs between two configurations of one method
                "method_config": plan.method_configs[job.representation_key],
                "task_config": job.task_config, "task": job.task,
                "protocol": job.protocol, "seed": job.seed, "suite": job.suite,
                "config_hash": job.config_hash, "representation_key": job.representation_key,
                "backbone": plan.suite.backbone, "data_root": str(plan.data_root),
                "data": (plan.data or identify(plan.data_root)).record(),
                "schedule_fraction": plan.schedule_fraction,
                "device": str(self.device), "torch_threads": torch.get_num_threads(),
                "host": socket.gethostname(), "pid": os.getpid(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "versions": versions()}
        base["group"] = plan.method_configs[job.representation_key].get(
            "group", self.registry.methods()[job.registered_method].group)
        try:
            if job.representation_key not in memo:
                try:
                    memo[job.representation_key] = self.representation(plan, job)
                except Exception as exc:  # every job of this method fails with the same cause
                    memo[job.representation_key] = exc
                    raise
            cached = memo[job.representation_key]
            if isinstance(cached, BaseException):
                raise cached
            rep, from_cache = cached
            task = self.registry.get("tasks", job.task)
            out = ddp_job.transfer(task, rep, job.protocol, self.context(plan, job.seed, job.task_config),
                                   self.nproc)
            t_eval = time.perf_counter()
            evaluators = self.registry.evaluators()
            main = self.registry.get("evaluators", out.metric).evaluate(out.predictions, out.ground_truth)
            per_metric = {main.metric: 100 * main.mean}
            for metric_id in out.extra_metrics:
                if metric_id in evaluators and out.predictions.kind in evaluators[metric_id].kinds:
                    per_metric[metric_id] = 100 * evaluators[metric_id].evaluate(
                        out.predictions, out.ground_truth).mean
            export_dir = None
            if job.task_config.get("export", True):  # VOC results files `benchharness evaluate` reads
                export_dir = self.store.path_for(job).with_suffix(".predictions")
                export_predictions(out.predictions, export_dir, out.info.get("split", "test"))
            timing = {"pretrain": rep.meta.get("pretrain_seconds"), "pretrain_cached": from_cache,
                      **out.timing, "evaluate": time.perf_counter() - t_eval}
            result = {**base, "status": "ok", "error": None, "metric": main.metric,
                      "value": 100 * main.mean,
                      "per_class": {k: 100 * v for k, v in main.per_class.items()},
                      "per_metric": per_metric, "timing": timing, "info": out.info,
                      "pretext": rep.meta.get("pretext"),
                      "export": export_dir and {"dir": str(export_dir), "split": out.info.get("split", "test"),
                                                "year": out.info.get("year")},
                      "representation": {k: rep.meta.get(k) for k in
                                         ("pretrain_data", "pretrain_seconds", "device", "config_hash",
                                          "load_report", "distributed")}}
            self.log(f"    {main.metric} = {100 * main.mean:.2f}  ({timing['transfer']:.0f}s)")
        except Exception as exc:  # a plugin's bug fails its job, not the whole grid
            result = {**base, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc(), "metric": None, "value": None}
            self.log(f"    FAILED: {type(exc).__name__}: {exc}")
        result["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        result["wall_seconds"] = time.perf_counter() - start
        result["log"] = str(log_file)
        self.store.write(job, result)
        return result
