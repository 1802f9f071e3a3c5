"""The process group of one job: data-parallel training on N processes under torchrun.

A job run with ``nproc > 1`` (``run --gpus-per-job N``, ``[executor] nproc``) is started by
:mod:`.ddp_job` under torch's elastic launcher, which sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in every process. :func:`setup` joins the group (NCCL with each rank on
``cuda:LOCAL_RANK`` when the job's device is CUDA, gloo on the CPU); the helpers below then let
a training loop split each global minibatch among the ranks.

The rule that keeps distributed training equal to single-process training: every rank draws
the *whole* minibatch from the same generator (same order, same crops), keeps its contiguous
:func:`share`, and backpropagates :func:`global_mean` of its per-sample losses, i.e. its sum
times ``world / global_count``. DistributedDataParallel averages the gradients over the ranks,
which gives the gradient of the whole minibatch's mean loss whatever the sizes of the shares.
The learning rate and the global batch size stay what the configuration says. No generator
state is broadcast: every rank seeds its generators from the job's seed (and a resumed
pretraining reads the same checkpoint), so all ranks draw the same minibatches already.

Outside torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``, or :func:`setup` not called) every
helper is a no-op, so single-process numbers are unchanged.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from .interfaces import BenchharnessError

T = TypeVar("T")


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> tuple[int, int]:
    """(this process's rank, the number of processes); (0, 1) outside a process group."""
    if not active():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes results and files."""
    return world()[0] == 0


def backend_for(device: torch.device) -> str:
    """The collective backend of a job on ``device``: NCCL on CUDA, gloo on the CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def check_nproc(nproc, device: torch.device | str) -> int:
    """``nproc`` as a positive int, or a BenchharnessError; on CUDA it may not exceed the
    visible GPUs (one rank per GPU)."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise BenchharnessError(f"processes per job (--gpus-per-job, [executor] nproc) must be a "
                                f"positive integer, got {nproc!r}")
    device = torch.device(device)
    if device.type == "cuda" and nproc > 1:
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if nproc > visible:
            raise BenchharnessError(f"{nproc} processes per job asked for, but torch sees "
                                    f"{visible} CUDA device(s); one rank needs one GPU")
    return nproc


def setup(device: torch.device | str, timeout_s: float = 1800) -> torch.device:
    """Join torchrun's process group (from its environment) and return this rank's device.

    Without torchrun's environment, or at world size 1, nothing is initialised and ``device``
    is returned unchanged.
    """
    device = torch.device(device)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or active():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), timeout=timedelta(seconds=timeout_s),
                            **({"device_id": device} if device.type == "cuda" else {}))
    return device


def teardown() -> None:
    """Leave the process group (if one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if active():
        dist.barrier()


@contextmanager
def main_first():
    """Run the block on rank 0 first and on the other ranks after it, so that they find what
    rank 0 cached on disk (decoded images, proposals) instead of making it at the same time."""
    if active() and not is_main():
        dist.barrier()
    yield
    if active() and is_main():
        dist.barrier()


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (gradients averaged over the ranks in backward);
    the model itself in a single process. Keep the unwrapped model for state dicts and for
    the optimizer (both share the parameters)."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


_FORWARDS = [0]  # data-parallel forward passes so far in this process (own_randomness)


@contextmanager
def own_randomness():
    """Around a data-parallel forward pass: draw the random numbers inside (dropout masks) from
    a stream of this rank's own, seeded from the job's seed, the pass and the rank, and leave
    torch's global generator as it was, so that every rank keeps drawing the same minibatches
    and RoI samples from it. A no-op in one process (its numbers stay what they were)."""
    if not active():
        yield
        return
    rank, size = world()
    _FORWARDS[0] += 1
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed((torch.initial_seed() + 7919 * _FORWARDS[0] * size + rank) % 2**63)
        yield


def share(n: int) -> slice:
    """This rank's contiguous part of ``n`` items: the first ``n % world`` ranks take one more
    than the others. All of them in a single process. Fewer items than ranks is an error (a
    rank without data would have nothing to backpropagate)."""
    rank, size = world()
    if size == 1:
        return slice(0, n)
    if n < size:
        raise BenchharnessError(f"a minibatch of {n} cannot be split among {size} processes; "
                                "make the batch at least as large as the processes per job")
    return _share_of(n, rank, size)


def shard(batch: T) -> T:
    """This rank's :func:`share` of a tensor or list (along its first dimension)."""
    return batch[share(len(batch))]


def global_mean(local_sum: torch.Tensor, global_count: int | float | torch.Tensor) -> torch.Tensor:
    """The loss to backpropagate for a mean over ``global_count`` items of which this rank
    holds the ones summed in ``local_sum``: ``local_sum * world / global_count``. DDP's average
    over the ranks then gives the gradient of the whole minibatch's mean."""
    return local_sum * (world()[1] / global_count)


def average(value: float) -> float:
    """The mean of a Python number over the ranks (for reported losses); itself when alone."""
    if not active():
        return value
    device = torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def describe(effective_batch_size: int, lr: float, unit: str = "images",
             split: int | None = None) -> dict | None:
    """What a result records about a distributed training: world size, backend, the global
    (effective) minibatch, what each rank takes of the minibatch that is split (``split``,
    by default the effective one; a micro-batch under gradient accumulation) and the learning
    rate; None in a single process."""
    if not active():
        return None
    size = world()[1]
    shares = [_share_of(split or effective_batch_size, r, size) for r in range(size)]
    return {"world_size": size, "backend": dist.get_backend(),
            "effective_batch_size": effective_batch_size, "batch_unit": unit,
            "per_rank_batch_size": [s.stop - s.start for s in shares], "lr": lr}


def _share_of(n: int, rank: int, size: int) -> slice:
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def supports(protocols: tuple[str, ...] | None = None) -> Callable[[T], T]:
    """Mark a method's ``pretrain`` (``protocols`` None) or a task's ``transfer`` (the
    protocols it trains data-parallel) as able to run on several processes; others run in
    one process even when a job asks for more."""
    def mark(fn):
        fn.distributed_protocols = tuple(protocols) if protocols is not None else ("pretrain",)
        return fn
    return mark


def supported(fn, protocol: str = "pretrain") -> bool:
    """Whether ``fn`` (a pretrain or transfer function) was marked by :func:`supports` for
    ``protocol``."""
    return protocol in getattr(fn, "distributed_protocols", ())
