"""Helpers shared by training loops: a guard against NaN or exploding losses, resumable
progress (an atomic checkpoint after every epoch, so a killed pretraining resumes), the
epoch loop of SGD under a one-cycle schedule that the epoch-based pretext methods share, the
step loop (resumable every N steps) that the step-based ones share, and the pairing of a held-out pretext figure with the untrained network's (``value_at_init``)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Callable

import torch

from . import atomic, distributed


class LossGuard:
    """Raises FloatingPointError when a loss is NaN/infinite or grows past ``factor`` x its first
    value; ``unit`` names what the loop counts in its messages ("epoch" or "step")."""

    def __init__(self, what: str, factor: float = 1e3, floor: float = 1.0, unit: str = "epoch"):
        self.what = what
        self.unit = unit
        self.factor = factor
        self.floor = floor
        self.first: float | None = None

    def check(self, loss: float, index: int) -> None:
        """Check the mean loss of epoch (or step) ``index`` (0-based)."""
        if not math.isfinite(loss):
            raise FloatingPointError(f"{self.what}: loss became {loss} in {self.unit} {index + 1}")
        if self.first is None:
            self.first = loss
        elif abs(loss) > self.factor * max(abs(self.first), self.floor):
            raise FloatingPointError(f"{self.what}: loss exploded to {loss:.4g} in {self.unit} {index + 1} "
                                     f"(first {self.unit}: {self.first:.4g})")


def sgd_step(optimizer: torch.optim.Optimizer, scheduler, loss: torch.Tensor,
             clip_norm: float = 0.0) -> torch.Tensor:
    """One optimisation step on a minibatch's ``loss`` (backward, optimizer, schedule); returns
    the loss detached, to be summed on the device without a host sync per step.

    ``clip_norm > 0`` is Caffe's ``clip_gradients``: when the L2 norm of all the optimizer's
    gradients together exceeds it, they are scaled down to that norm. As in Caffe's
    ``SGDSolver::ApplyUpdate`` this happens before weight decay (torch's SGD adds the decay
    inside ``step``), so the decay term is never clipped.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm > 0:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
        # Caffe's factor exactly (clip_grad_norm_ adds 1e-6 to the norm), without a host sync
        factor = torch.where(norm > clip_norm, clip_norm / norm, torch.ones_like(norm))
        torch._foreach_mul_(grads, factor.to(grads[0].dtype))
    optimizer.step()
    scheduler.step()
    return loss.detach()


class EpochCheckpoint:
    """Atomic per-epoch training state in ``directory/progress.pt`` (read back weights-only)."""

    def __init__(self, directory: Path | None):
        self.file = Path(directory) / "progress.pt" if directory else None

    def load(self) -> dict[str, Any] | None:
        """The last saved state, or None when there is none (or it cannot be read)."""
        if self.file is None or not self.file.is_file():
            return None
        try:
            return torch.load(self.file, map_location="cpu", weights_only=True)
        except Exception:  # a state we cannot read is not worth failing for: start over
            return None

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (tensors, numbers, lists, dicts, state dicts) atomically; under
        several processes only rank 0 writes (every rank resumes from the same file)."""
        if self.file is None or not distributed.is_main():
            return
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic.write_bytes(self.file, buffer.getvalue())

    def save_training(self, model, optimizer, scheduler, generator: torch.Generator, **extra) -> None:
        """Save a training loop's whole state: the model, optimizer, scheduler and random
        generator, plus ``extra`` (the epoch or step reached, ...)."""
        self.save({"model": model.state_dict(), "opt": optimizer.state_dict(),
                   "sched": scheduler.state_dict(), "gen": generator.get_state(), **extra})

    def resume_training(self, model, optimizer, scheduler, generator: torch.Generator) -> dict | None:
        """Restore what :meth:`save_training` saved into the given objects; returns the saved
        state (for its ``extra`` entries), or None when there is nothing to resume."""
        state = self.load()
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["opt"])
            scheduler.load_state_dict(state["sched"])
            generator.set_state(state["gen"])
        return state

    def clear(self) -> None:
        """Remove the saved state (once the final result is stored)."""
        if self.file is not None:
            self.file.unlink(missing_ok=True)


class OneCycleEpochs:
    """The epochs of SGD (momentum, weight decay) under a one-cycle learning-rate schedule,
    saved after every epoch so that a killed run resumes at the next one.

    ``cfg`` holds ``epochs``, ``lr``, ``momentum`` and ``weight_decay``. Iterating yields the
    epochs still to run with the model in training mode; call :meth:`step` once per minibatch.
    After each epoch the loop checks the epoch's mean loss (:class:`LossGuard`), saves the model,
    optimizer, schedule and :attr:`generator` (the one source of randomness the loop should
    draw from) and shows the loss on the progress bar, with :attr:`postfix` beside it.
    """

    def __init__(self, ctx, model: torch.nn.Module, cfg: dict, steps_per_epoch: int, what: str,
                 pct_start: float):
        self.model = model
        self.steps_per_epoch = steps_per_epoch
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                         weight_decay=cfg["weight_decay"])
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, cfg["lr"], total_steps=cfg["epochs"] * steps_per_epoch, pct_start=pct_start)
        self.generator = torch.Generator().manual_seed(ctx.seed)
        self.postfix: dict[str, str] = {}
        self._guard = LossGuard(f"{what} pretraining")
        self._checkpoint = ctx.epoch_checkpoint()
        state = self._checkpoint.resume_training(model, self.optimizer, self.scheduler, self.generator)
        self.first_epoch = 0 if state is None else state["epoch"] + 1
        if state is not None:
            ctx.log(f"resuming {what} pretraining at epoch {self.first_epoch + 1}")
        self._bar = ctx.bar(range(self.first_epoch, cfg["epochs"]), desc=f"pretrain {what}",
                            initial=self.first_epoch, total=cfg["epochs"])
        self._total = 0.0

    def __iter__(self):
        for epoch in self._bar:
            self.model.train()
            self._total = 0.0
            yield epoch
            mean = distributed.average(float(self._total) / self.steps_per_epoch)
            self._guard.check(mean, epoch)
            self._checkpoint.save_training(self.model, self.optimizer, self.scheduler, self.generator,
                                           epoch=epoch)
            if hasattr(self._bar, "set_postfix"):
                self._bar.set_postfix(loss=f"{mean:.3f}", **self.postfix)

    def step(self, loss: torch.Tensor) -> None:
        """One optimisation step on a minibatch's ``loss`` (backward, SGD, schedule)."""
        self._total += sgd_step(self.optimizer, self.scheduler, loss)


class PretextSteps:
    """The steps of a step-based pretext loop, saved every ``every`` steps (and after the last)
    so that a killed pretraining resumes at the step after the last save.

    ``state`` maps names to what the loop saves and restores: modules, optimizers, schedulers
    (anything with ``state_dict`` / ``load_state_dict``); ``generator`` is the loop's one source
    of randomness, saved beside them; ``global_rng`` also saves torch's global generator (for
    dropout masks). Iterating yields the step indices still to run; call :meth:`record` once per
    step with its loss, or several named losses. The progress bar shows their running means; at
    every save the mean of the losses since the last save is checked (:class:`LossGuard`). The
    dict :attr:`resumed` is what a resumed run read back (None on a fresh start), for entries a
    method saved through :attr:`extra`: a callable returning more entries for every save.
    """

    def __init__(self, ctx, what: str, steps: int, every: int, state: dict[str, Any],
                 generator: torch.Generator, global_rng: bool = False,
                 extra: Callable[[], dict] | None = None):
        self.what, self.steps, self.every = what, int(steps), int(every)
        self.state, self.generator, self.global_rng, self.extra = state, generator, global_rng, extra
        self._checkpoint = ctx.epoch_checkpoint()
        self.resumed = self._restore(ctx.log)
        self.first = 0 if self.resumed is None else int(self.resumed["step"])
        self._bar = ctx.bar(range(self.first, self.steps), desc=f"pretrain {what}", initial=self.first,
                            total=self.steps)
        self._guard = LossGuard(f"{what} pretraining", unit="step")
        self.running: dict[str, float] = {}
        self._window: dict[str, float] = {}
        self._count = 0

    def _restore(self, log) -> dict | None:
        saved = self._checkpoint.load()
        if saved is None:
            return None
        missing = [key for key in (*self.state, "gen", "step") if key not in saved]
        if missing:  # written by another version of the method: not worth failing for
            log(f"{self.what}: saved progress lacks {missing}; starting the pretraining over")
            return None
        for name, obj in self.state.items():
            obj.load_state_dict(saved[name])
        self.generator.set_state(saved["gen"])
        if self.global_rng and "torch_rng" in saved:
            torch.set_rng_state(saved["torch_rng"])
        log(f"resuming {self.what} pretraining at step {int(saved['step']) + 1}")
        return saved

    def __iter__(self):
        for step in self._bar:
            yield step
            if hasattr(self._bar, "set_postfix") and step % 5 == 4:
                self._bar.set_postfix({key: f"{value:.4g}" for key, value in self.running.items()})
            if (step + 1) % self.every == 0 or step + 1 == self.steps:
                self._guard.check(sum(self._window.values()) / max(self._count, 1), step)
                self._window, self._count = {}, 0
                self._save(step + 1)

    def _save(self, step: int) -> None:
        saved = {"step": step, "gen": self.generator.get_state(),
                 **{name: obj.state_dict() for name, obj in self.state.items()}}
        if self.global_rng:
            saved["torch_rng"] = torch.get_rng_state()
        if self.extra is not None:
            saved.update(self.extra())
        self._checkpoint.save(saved)

    def record(self, loss: torch.Tensor | float | None = None, **named: torch.Tensor | float) -> None:
        """Record this step's ``loss`` (as ``running["loss"]``) or named losses (``D=..., G=...``)."""
        losses = named if loss is None else {"loss": loss, **named}
        for key, value in losses.items():
            value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            self.running[key] = value if key not in self.running else 0.9 * self.running[key] + 0.1 * value
            self._window[key] = self._window.get(key, 0.0) + value
        self._count += 1


def lower_is_better(pretext: dict) -> bool:
    """Whether a pretext dict's ``metric`` is marked lower-is-better (an error, not an accuracy)."""
    return "lower is better" in str(pretext.get("metric", ""))


def with_value_at_init(trained: dict | None, initial: dict | None, log=None,
                       extra: tuple[str, ...] = ()) -> dict | None:
    """``trained`` (a held-out pretext dict) with ``value_at_init``: the same figure, by the same
    function on the same held-out data, of the freshly initialised network before any training
    (``initial``); each key of ``extra`` is copied as ``<key>_at_init``. ``log`` (a callable) is
    told when training did not improve on it, so a pretext that the untrained network already
    solves, or one that training never learned, is seen at once."""
    if trained is None or initial is None:
        return trained
    out = {**trained, "value_at_init": initial["value"]}
    for key in extra:
        if key in initial:
            out[f"{key}_at_init"] = initial[key]
    gain = initial["value"] - out["value"] if lower_is_better(out) else out["value"] - initial["value"]
    if log is not None and not gain > 0:
        log(f"pretext {out.get('metric')}: {out['value']:.4g} after training is no better than "
            f"{initial['value']:.4g} at initialisation")
    return out
