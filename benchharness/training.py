"""Helpers shared by training loops: a guard against NaN or exploding losses, and resumable
progress (an atomic checkpoint after every epoch, so a killed pretraining resumes)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import torch

from . import atomic


class LossGuard:
    """Raises FloatingPointError when a loss is NaN/infinite or grows past ``factor`` x its first value."""

    def __init__(self, what: str, factor: float = 1e3, floor: float = 1.0):
        self.what = what
        self.factor = factor
        self.floor = floor
        self.first: float | None = None

    def check(self, loss: float, epoch: int) -> None:
        """Check one epoch's mean loss."""
        if not math.isfinite(loss):
            raise FloatingPointError(f"{self.what}: loss became {loss} in epoch {epoch + 1}")
        if self.first is None:
            self.first = loss
        elif abs(loss) > self.factor * max(abs(self.first), self.floor):
            raise FloatingPointError(f"{self.what}: loss exploded to {loss:.4g} in epoch {epoch + 1} "
                                     f"(first epoch: {self.first:.4g})")


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
        """Write ``state`` (tensors, numbers, lists, dicts, state dicts) atomically."""
        if self.file is None:
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
