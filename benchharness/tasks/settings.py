"""What the transfer tasks share about their settings: reading a task's suite section into a
settings dataclass, and the step learning-rate schedule."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..suite import SCHEDULE_KEYS, check_schedule_fraction, scale_count


SCHEDULE_FRACTION_KEY = "schedule_fraction"
"""The key of a task's config through which ``run --schedule-fraction F`` reaches the task: the
runner has already scaled the schedule counts the suite gives; :func:`from_suite_section` scales
the settings dataclass's own defaults of the others."""


def from_suite_section(settings_class, task: str, protocols: Sequence[str], config: Mapping[str, Any],
                       protocol: str):
    """An instance of the dataclass ``settings_class`` from the top-level keys of a task's suite
    section, overridden by its ``[protocol]`` table. A key that is neither a field, a protocol
    table nor ``protocols`` is an error naming the task; list values of tuple fields become
    tuples. With ``schedule_fraction`` F in ``config``, the defaults of the fields named in
    :data:`~benchharness.suite.SCHEDULE_KEYS` that the section does not set are multiplied by F
    (at least 1; the values it sets arrive scaled already)."""
    names = {f.name for f in fields(settings_class)}
    unknown = set(config) - names - set(protocols) - {"protocols", SCHEDULE_FRACTION_KEY}
    if unknown:
        raise ValueError(f"{task}: unknown settings {sorted(unknown)}; known: {sorted(names)}")
    merged = {k: v for k, v in config.items() if k in names}
    merged.update({k: v for k, v in (config.get(protocol) or {}).items() if k in names})
    defaults = settings_class()
    for key, value in merged.items():
        if isinstance(getattr(defaults, key), tuple):
            merged[key] = tuple(value)
    fraction = check_schedule_fraction(config.get(SCHEDULE_FRACTION_KEY, 1.0))
    if fraction != 1:
        for name in sorted((names & SCHEDULE_KEYS) - set(merged)):
            merged[name] = scale_count(getattr(defaults, name), fraction)
    return settings_class(**merged)


def under_data_root(setting: str, data_root) -> str:
    """A path setting (SBD's root, a proposals file or folder): absolute as given; relative,
    under ``data_root`` when it is there (a data root that holds VOCdevkit and its companions),
    else as given (relative to the working directory)."""
    if not setting:
        return ""
    path = Path(setting).expanduser()
    if not path.is_absolute() and data_root is not None and (Path(data_root) / path).exists():
        path = Path(data_root) / path
    return str(path)


def solver_steps(n_images: int, images_per_step: int, iterations: int, epochs: int) -> tuple[int, int]:
    """(solver steps per pass over ``n_images``, solver steps in all): ``iterations`` when set
    (the reference solvers count iterations), else ``epochs`` passes."""
    per_pass = max(1, n_images // images_per_step)
    return per_pass, (iterations or epochs * per_pass)


def step_schedule(optimizer: torch.optim.Optimizer, total_steps: int, lr_steps: int,
                  step_at: float | None = None, stepsize: int = 0,
                  gamma: float = 0.1) -> torch.optim.lr_scheduler.LRScheduler:
    """Multiply the learning rate by ``gamma`` every ``stepsize`` steps when ``stepsize`` is set
    (Caffe's ``lr_policy: "step"``); otherwise ``lr_steps`` times, evenly over ``total_steps``,
    a single step happening at the fraction ``step_at`` of training when given (Fast R-CNN's
    and FCN's). ``lr_steps = 0`` without ``stepsize`` is Caffe's ``fixed`` policy."""
    if stepsize > 0:
        return caffe_step_schedule(optimizer, stepsize, gamma)
    if lr_steps == 1 and step_at is not None:
        milestones = [max(1, round(total_steps * step_at))]
    else:
        milestones = [round(total_steps * (i + 1) / (lr_steps + 1)) for i in range(lr_steps)]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=gamma)


def caffe_step_schedule(optimizer: torch.optim.Optimizer, stepsize: int,
                        gamma: float) -> torch.optim.lr_scheduler.StepLR:
    """Caffe's ``lr_policy: "step"``: the learning rate of iteration ``it`` (0-based) is
    ``base_lr * gamma ** floor(it / stepsize)`` (call ``step()`` once after every iteration)."""
    if stepsize < 1:
        raise ValueError(f"stepsize must be at least 1 iteration, got {stepsize}")
    return torch.optim.lr_scheduler.StepLR(optimizer, stepsize, gamma)
