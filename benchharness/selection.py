"""What a run selects, checked by name before any data is read or generated.

``benchharness run`` calls :func:`select` before it resolves (or generates) the data root, and
:func:`~benchharness.runner.plan` calls it again: the backbone, every method (a variant resolved
to its registered method, its argument checked), every task, every protocol asked for, and that
the selection leaves at least one job. Each problem is a :class:`BenchharnessError` naming it
and what exists instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .interfaces import BenchharnessError, DataError
from .plugins import Registry
from .suite import Suite, split_method_spec
from .tasks.settings import SCHEDULE_FRACTION_KEY
from .variants import ResolvedMethod, check_bases


@dataclass(frozen=True)
class MethodChoice:
    """One method of the run: its spec (``NAME`` or ``NAME:ARG``), argument and resolution."""

    spec: str
    arg: str | None
    resolved: ResolvedMethod


@dataclass
class Selection:
    """The methods and, per task, the protocols a run's jobs cover."""

    methods: list[MethodChoice]
    protocols: dict[str, list[str]]  # task -> protocols, in the suite's order

    def job_count(self, suite: Suite, seeds: int | None) -> int:
        """How many jobs the selection makes (methods x protocols x seeds)."""
        per_method = sum(seeds or suite.seeds_for(task, protocol)
                         for task, chosen in self.protocols.items() for protocol in chosen)
        return len(self.methods) * per_method


def _method(spec: str, suite: Suite, registry: Registry) -> MethodChoice:
    name, arg = split_method_spec(spec)
    registered = registry.methods()
    if name not in registered and name not in suite.variants:
        declared = (f"; variants declared in {suite.path or suite.name}: "
                    f"{', '.join(sorted(suite.variants))}" if suite.variants else "")
        try:
            registry.get("methods", name)  # raises with the registered names
        except BenchharnessError as exc:
            raise BenchharnessError(f"{exc}{declared}") from None
    resolved = suite.resolve_method(name)
    method = registered[resolved.plugin]
    if method.takes_argument and not arg:
        raise BenchharnessError(f"method {name} needs an argument: --method {name}:PATH")
    if arg and not method.takes_argument:
        raise BenchharnessError(f"method {name} takes no argument (got {spec!r})")
    if arg and not Path(arg).expanduser().exists():
        raise DataError(Path(arg).expanduser(), "checkpoint not found")
    return MethodChoice(spec, arg, resolved)


def select(suite: Suite, registry: Registry, methods: list[str] | None = None,
           tasks: list[str] | None = None, protocols: list[str] | None = None,
           seeds: int | None = None) -> Selection:
    """The run's methods and protocols per task (``methods``, ``tasks``, ``protocols`` replace
    or narrow the suite's), or a BenchharnessError for the first name that does not exist: the
    backbone, a method or variant (the suite's variants are checked whether selected or not), a
    task, a protocol of the suite's, a ``--protocol`` that none of the selected tasks has (the
    error lists each task's protocols); or a selection that leaves no job."""
    where = suite.path or suite.name
    registry.get("backbones", suite.backbone)
    check_bases(suite.variants, registry.methods(), str(where))
    choices = [_method(spec, suite, registry) for spec in (methods or suite.methods)]
    found = {name: registry.get("tasks", name) for name in (tasks or suite.tasks)}
    if protocols:
        missing = [p for p in dict.fromkeys(protocols)
                   if not any(p in task.protocols for task in found.values())]
        if missing:
            has = "; ".join(f"{name} has {', '.join(task.protocols)}" for name, task in found.items())
            raise BenchharnessError(f"protocol {', '.join(missing)}: none of the selected tasks has "
                                    f"it ({has})")
    chosen = {}
    for name, task in found.items():
        if SCHEDULE_FRACTION_KEY in suite.task_config.get(name, {}):
            raise BenchharnessError(f"{where}: [tasks.{name}] sets {SCHEDULE_FRACTION_KEY}; give it "
                                    "as `run --schedule-fraction F`")
        if protocols:
            chosen[name] = [p for p in protocols if p in task.protocols]
            continue
        chosen[name] = (suite.tasks.get(name) or suite.task_config.get(name, {}).get("protocols")
                        or task.protocols_by_default())
        bad = [p for p in chosen[name] if p not in task.protocols]
        if bad:
            raise BenchharnessError(f"{where}: task {name}: unknown protocols {bad}; it has "
                                    f"{list(task.protocols)}")
    selection = Selection(choices, chosen)
    if not selection.job_count(suite, seeds):
        listed = "; ".join(f"{name}: {', '.join(ps) or 'none'}" for name, ps in chosen.items())
        raise BenchharnessError(
            f"{where}: the selection leaves no job to run (methods: "
            f"{', '.join(c.spec for c in choices) or 'none'}; tasks and protocols: "
            f"{listed or 'none'}; seeds: {seeds or suite.seeds})")
    return selection
