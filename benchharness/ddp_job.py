"""A job's training on N processes: the driver's launch through torchrun, and the entry point
every rank runs (``python -m benchharness.ddp_job WORKDIR``).

The runner stays in charge of everything around training (locks, the representation cache,
evaluation, the result file): only the call of a method's ``pretrain`` or of a task's
``transfer`` is handed to :func:`pretrain` / :func:`transfer`. With ``nproc > 1``, and a
function marked by :func:`benchharness.distributed.supports`, they write what the call needs
(``spec.pkl``: names, settings, the representation) into a fresh folder under
``<cache>/.ddp/``, run ``python -m torch.distributed.run --standalone --nproc_per_node N -m
benchharness.ddp_job WORKDIR``, and read back what rank 0 wrote (``out.pkl``). Every rank
rebuilds the method or task from the plugin registry and runs the same call; the training
loops split their minibatches through :mod:`benchharness.distributed`. A rank that fails
writes ``error-rank<R>.txt``; torchrun then stops the others and the driver raises
:class:`DistributedJobError` with that message, which the runner stores as the job's failure.

Any other call, and every call with ``nproc = 1``, runs in the driver as before.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import torch

from . import atomic, distributed
from .interfaces import RunContext

SPEC = "spec.pkl"
OUT = "out.pkl"


class DistributedJobError(RuntimeError):
    """A distributed pretraining or transfer failed on one of its ranks."""


def pretrain(method, ctx: RunContext, nproc: int = 1):
    """``method.pretrain(ctx)``, on ``nproc`` processes when the method supports it."""
    if nproc <= 1 or not distributed.supported(method.pretrain):
        if nproc > 1:
            ctx.log(f"    {method.name} pretrains in one process (no data-parallel loop)")
        return method.pretrain(ctx)
    return _launch({"kind": "pretrain", "name": method.name, "ctx": _context_fields(ctx)}, nproc, ctx)


def transfer(task, representation, protocol: str, ctx: RunContext, nproc: int = 1):
    """``task.transfer(representation, protocol, ctx)``, on ``nproc`` processes when the task
    supports it under ``protocol``."""
    if nproc <= 1 or not distributed.supported(task.transfer, protocol):
        if nproc > 1:
            ctx.log(f"    {task.name} {protocol} runs in one process (no data-parallel loop)")
        return task.transfer(representation, protocol, ctx)
    spec = {"kind": "transfer", "name": task.name, "protocol": protocol,
            "representation": representation, "ctx": _context_fields(ctx)}
    return _launch(spec, nproc, ctx)


def _context_fields(ctx: RunContext) -> dict:
    """The parts of a RunContext a rank rebuilds its own from (no callables)."""
    return {"device": str(ctx.device), "seed": ctx.seed, "data_root": str(ctx.data_root),
            "cache_dir": str(ctx.cache_dir), "backbone": ctx.backbone, "config": dict(ctx.config),
            "method_arg": ctx.method_arg, "state_dir": str(ctx.state_dir) if ctx.state_dir else None}


def command(workdir: Path, nproc: int) -> list[str]:
    """The torchrun command line that runs ``workdir``'s spec on ``nproc`` local processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "benchharness.ddp_job", str(workdir)]


def _launch(spec: dict, nproc: int, ctx: RunContext):
    device = torch.device(spec["ctx"]["device"])
    distributed.check_nproc(nproc, device)
    parent = Path(ctx.cache_dir) / ".ddp"
    parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{spec['kind']}-", dir=parent))
    try:
        atomic.write_bytes(workdir / SPEC, pickle.dumps(spec))
        env = dict(os.environ)
        if device.type == "cpu":  # the CPU's threads divided among the ranks
            env.setdefault("OMP_NUM_THREADS", str(max(1, torch.get_num_threads() // nproc)))
        ctx.log(f"    {spec['kind']} {spec['name']} on {nproc} processes "
                f"({distributed.backend_for(device)})")
        done = subprocess.run(command(workdir, nproc), env=env)
        if done.returncode != 0 or not (workdir / OUT).is_file():
            errors = sorted(workdir.glob("error-rank*.txt"))
            first = errors[0].read_text().splitlines()[0] if errors else \
                f"torchrun exited with status {done.returncode}"
            raise DistributedJobError(f"{spec['kind']} of {spec['name']} on {nproc} processes: {first}")
        with open(workdir / OUT, "rb") as fh:
            return pickle.load(fh)  # written by our own rank 0 a moment ago
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _rank_context(fields: dict, device: torch.device) -> RunContext:
    from .plugins import get_registry
    from .runner import progress_bar

    main = distributed.is_main()
    registry = get_registry()
    return RunContext(device=device, seed=fields["seed"], data_root=Path(fields["data_root"]),
                      cache_dir=Path(fields["cache_dir"]), backbone=fields["backbone"],
                      config=fields["config"], method_arg=fields["method_arg"],
                      progress=progress_bar if main else None,
                      log=(lambda msg: print(msg, file=sys.stderr, flush=True)) if main else (lambda msg: None),
                      backbone_factory=registry.get("backbones", fields["backbone"]).build,
                      state_dir=Path(fields["state_dir"]) if fields["state_dir"] else None)


def run_spec(spec: dict):
    """Run a spec's call on this rank (joining the process group first); returns its value."""
    from .plugins import get_registry

    device = distributed.setup(spec["ctx"]["device"])
    ctx = _rank_context(spec["ctx"], device)
    if spec["kind"] == "pretrain":
        return get_registry().get("methods", spec["name"]).pretrain(ctx)
    task = get_registry().get("tasks", spec["name"])
    return task.transfer(spec["representation"], spec["protocol"], ctx)


def main(argv: list[str] | None = None) -> int:
    """A rank's entry point: run ``WORKDIR/spec.pkl``; rank 0 writes ``WORKDIR/out.pkl``."""
    argv = sys.argv[1:] if argv is None else argv
    workdir = Path(argv[0])
    rank = int(os.environ.get("RANK", "0"))
    try:
        with open(workdir / SPEC, "rb") as fh:
            spec = pickle.load(fh)  # written by the driver that started us
        value = run_spec(spec)
        if distributed.is_main():
            atomic.write_bytes(workdir / OUT, pickle.dumps(value))
        distributed.barrier()
    except BaseException as exc:
        (workdir / f"error-rank{rank}.txt").write_text(
            f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        raise
    finally:
        distributed.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
