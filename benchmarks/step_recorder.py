"""How fast a training loop steps, and how fast the bare network it trains steps.

:class:`StepRecorder` watches any training loop from outside, through torch's global hooks:
every ``optimizer.step()`` is timestamped, per optimizer; the *primary* optimizer is the first
one that steps (BiGAN's discriminator before its encoder + generator), and one of its steps is
one iteration of the loop. After ``warmup`` primary steps the recorder also captures, for
``capture`` iterations, every outermost module call (the module object, its inputs detached and
cloned, the grad and autocast modes, the train / eval mode of every submodule) and every
optimizer step in between. Module hooks are on only during those iterations, and the loop's
rate is timed from the end of the capture on, so the measurement does not slow what it times.

:func:`replay` then runs the captured iterations again with nothing around them: the same module
objects in the same modes, forward on the captured tensors, backward of the sum of each call's
floating outputs that require grad, and the same optimizers' steps. That is the bare network's
training step on the same batch and input size, data already in memory; the loop's rate over it
is the loop's step efficiency.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.modules import module as module_hooks
from torch.optim import optimizer as optimizer_hooks


class Clock:
    """Timestamps on a device's timeline: ``perf_counter`` on the CPU; on CUDA, events recorded
    on the current stream, so that stamping a step never makes the loop wait for the GPU (a
    synchronisation per step would take away the overlap of host and device the loop has)."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def stamp(self) -> Any:
        """A point in time: a float on the CPU, a recorded ``torch.cuda.Event`` on CUDA."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            return event
        return time.perf_counter()

    def seconds(self, start: Any, end: Any) -> float:
        """Seconds from ``start`` to ``end`` (waits for ``end`` on CUDA)."""
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end) / 1000
        return end - start


@dataclass
class ModuleCall:
    """One outermost module call as the loop made it."""

    module: nn.Module
    args: tuple
    kwargs: dict
    grad_enabled: bool
    autocast: tuple[tuple[str, torch.dtype], ...]  # (device type, dtype) of each active autocast
    modes: tuple[tuple[nn.Module, bool], ...]  # every submodule's ``training`` flag


@dataclass
class OptimizerStep:
    """An ``optimizer.step()`` the loop made."""

    optimizer: torch.optim.Optimizer


@dataclass
class Iteration:
    """What happened between two steps of the primary optimizer, in order (ending with its step)."""

    events: list[ModuleCall | OptimizerStep] = field(default_factory=list)

    @property
    def calls(self) -> list[ModuleCall]:
        """The module calls only."""
        return [e for e in self.events if isinstance(e, ModuleCall)]


def _map_tensors(value: Any, fn) -> Any:
    """``value`` with ``fn`` applied to every tensor inside tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        mapped = [_map_tensors(v, fn) for v in value]
        return type(value)(*mapped) if hasattr(value, "_fields") else tuple(mapped)
    if isinstance(value, list):
        return [_map_tensors(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside ``value`` (tuples, lists, dicts, a module's output)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


def _snapshot_tensor(t: torch.Tensor) -> torch.Tensor:
    # an input that required grad (an earlier layer's output) becomes a leaf that requires grad,
    # so that the replay computes the gradient with respect to it as the loop did
    copy = t.detach().clone()
    return copy.requires_grad_() if t.requires_grad and copy.is_floating_point() else copy


def _autocast_state() -> tuple[tuple[str, torch.dtype], ...]:
    return tuple((kind, torch.get_autocast_dtype(kind)) for kind in ("cpu", "cuda")
                 if torch.is_autocast_enabled(kind))


class StepRecorder:
    """Context manager that times a training loop's optimizer steps and captures ``capture``
    iterations of it after ``warmup`` steps of the primary optimizer (see the module's doc).

    After the loop: :attr:`steps` counts the primary optimizer's steps, :meth:`steps_per_second`
    is the loop's rate after the capture, :attr:`iterations` holds the captured iterations
    (for :func:`replay`). Every hook is removed when the context exits, also on an error.
    """

    def __init__(self, device: torch.device | str = "cpu", warmup: int = 3, capture: int = 3):
        if warmup < 1 or capture < 1:
            raise ValueError(f"warmup and capture must be at least 1, got {warmup} and {capture}")
        self.clock = Clock(device)
        self.warmup, self.capture = warmup, capture
        self.primary: torch.optim.Optimizer | None = None
        self.step_counts: dict[torch.optim.Optimizer, int] = {}
        self.iterations: list[Iteration] = []
        self._stamps: list[Any] = []
        self._current: Iteration | None = None
        self._open: ModuleCall | None = None
        self._depth = 0
        self._step_hook = None
        self._module_hooks: list = []

    @property
    def steps(self) -> int:
        """Steps the primary optimizer made."""
        return len(self._stamps)

    @property
    def timed_steps(self) -> int:
        """Primary steps whose timestamps :meth:`steps_per_second` uses."""
        return max(0, self.steps - (self.warmup + self.capture - 1))

    def __enter__(self) -> "StepRecorder":
        self._step_hook = optimizer_hooks.register_optimizer_step_post_hook(self._on_step)
        return self

    def __exit__(self, *exc) -> None:
        self._stop_capture()
        if self._step_hook is not None:
            self._step_hook.remove()
            self._step_hook = None

    def steps_per_second(self) -> float:
        """The primary optimizer's steps per second, from the step that ended the capture to the
        last one; a ValueError when the loop made too few steps to time."""
        first = self.warmup + self.capture - 1
        if self.timed_steps < 2:
            raise ValueError(f"the loop made {self.steps} optimizer steps: too few to time after "
                             f"{self.warmup} warm-up and {self.capture} captured steps")
        return (self.timed_steps - 1) / self.clock.seconds(self._stamps[first], self._stamps[-1])

    # -- hooks ---------------------------------------------------------------------------------

    def _on_step(self, optimizer, _args, _kwargs) -> None:
        if self._current is not None:
            self._current.events.append(OptimizerStep(optimizer))
        self.step_counts[optimizer] = self.step_counts.get(optimizer, 0) + 1
        if self.primary is None:
            self.primary = optimizer
        if optimizer is not self.primary:
            return
        self._stamps.append(self.clock.stamp())
        n = self.steps
        if self._current is not None:
            self.iterations.append(self._current)
            self._current = None
        if n == self.warmup + self.capture:
            self._stop_capture()
        elif n >= self.warmup and len(self.iterations) < self.capture:
            self._start_capture()

    def _start_capture(self) -> None:
        self._current = Iteration()
        if not self._module_hooks:
            self._depth, self._open = 0, None
            self._module_hooks = [
                module_hooks.register_module_forward_pre_hook(self._before_call),
                module_hooks.register_module_forward_hook(self._after_call, with_kwargs=True,
                                                          always_call=True)]

    def _stop_capture(self) -> None:
        for handle in self._module_hooks:
            handle.remove()
        self._module_hooks = []
        self._current = None
        self._open = None

    def _before_call(self, module: nn.Module, args: tuple) -> None:
        self._depth += 1
        if self._depth == 1 and self._current is not None:
            self._open = ModuleCall(module, _map_tensors(args, _snapshot_tensor), {},
                                    torch.is_grad_enabled(), _autocast_state(),
                                    tuple((m, m.training) for m in module.modules()))

    def _after_call(self, module: nn.Module, _args: tuple, *rest) -> None:
        # rest is (kwargs, output), or (output,) when torch calls the hook after an exception
        if self._depth == 1 and self._open is not None and self._open.module is module:
            if len(rest) == 2:
                self._open.kwargs = _map_tensors(rest[0], _snapshot_tensor)
                if self._current is not None:
                    self._current.events.append(self._open)
            self._open = None
        self._depth = max(0, self._depth - 1)


# -- replay ------------------------------------------------------------------------------------

@dataclass
class ReplayTiming:
    """Iterations replayed in ``seconds`` (after the warm-up ones)."""

    iterations: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Replayed iterations per second."""
        return self.iterations / self.seconds


def _fresh_input(t: torch.Tensor) -> torch.Tensor:
    # a copy per call for inputs that require grad: a module may work in place on its input
    # (inplace ReLU), which a leaf that requires grad does not allow
    return t.clone() if t.requires_grad else t


def _replay_call(call: ModuleCall) -> None:
    for module, training in call.modes:
        if module.training != training:
            module.training = training
    args = _map_tensors(call.args, _fresh_input)
    kwargs = _map_tensors(call.kwargs, _fresh_input)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.set_grad_enabled(call.grad_enabled))
        for kind, dtype in call.autocast:
            stack.enter_context(torch.autocast(device_type=kind, dtype=dtype))
        out = call.module(*args, **kwargs)
    roots = [t for t in _tensors(out) if t.requires_grad and t.is_floating_point()]
    if roots:
        torch.autograd.backward([t.float().sum() for t in roots])


def _grad_holders(iterations: list[Iteration]) -> list[torch.Tensor]:
    """Every tensor a replayed iteration leaves a gradient on: parameters and input leaves."""
    seen: dict[int, torch.Tensor] = {}
    for iteration in iterations:
        for event in iteration.events:
            if isinstance(event, OptimizerStep):
                tensors = [p for group in event.optimizer.param_groups for p in group["params"]]
            else:
                tensors = [*event.module.parameters(), *_tensors(event.args), *_tensors(event.kwargs)]
            seen.update((id(t), t) for t in tensors if t.requires_grad)
    return list(seen.values())


def replay_iteration(iteration: Iteration, holders: list[torch.Tensor]) -> None:
    """One bare training iteration: gradients cleared, then the captured calls (forward and
    backward) and optimizer steps in their order."""
    for t in holders:
        t.grad = None
    for event in iteration.events:
        if isinstance(event, OptimizerStep):
            event.optimizer.step()
        else:
            _replay_call(event)


def replay(iterations: list[Iteration], device: torch.device | str = "cpu", min_iterations: int = 20,
           min_seconds: float = 1.0, max_iterations: int = 1000, warmup: int = 2) -> ReplayTiming:
    """Time the bare training step: the captured ``iterations`` replayed in turn, at least
    ``min_iterations`` times and for at least about ``min_seconds``, after ``warmup`` untimed
    ones (which also size the timed run, so that the device is never waited for inside it).

    The optimizers step, so the modules' weights change: run this after the loop is done.
    """
    if not iterations:
        raise ValueError("no captured iteration to replay")
    clock, holders = Clock(device), _grad_holders(iterations)

    def run(n: int) -> float:
        start = clock.stamp()
        for k in range(n):
            replay_iteration(iterations[k % len(iterations)], holders)
        return clock.seconds(start, clock.stamp())

    with torch.enable_grad():
        probe = run(max(warmup, len(iterations)))
        per_iteration = probe / max(warmup, len(iterations))
        n = min(max_iterations, max(min_iterations, math.ceil(min_seconds / max(per_iteration, 1e-9))))
        n = math.ceil(n / len(iterations)) * len(iterations)  # whole rounds: each batch as often
        return ReplayTiming(n, run(n))
