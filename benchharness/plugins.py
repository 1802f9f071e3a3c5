"""The plugin manager: built-in modules plus everything in the ``benchharness`` entry-point group.

The core asks this registry for methods, tasks, evaluators, backbones and datasets by name; it
never imports a plugin module itself. A plugin that fails to import is recorded (name and error)
and the others still load.
"""

from __future__ import annotations

import importlib
import traceback
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .interfaces import BenchharnessError

# Core behaviour shipped as plugins on the same hooks third parties use.
BUILTIN_MODULES = (
    "benchharness.backbones",
    "benchharness.data.datasets",
    "benchharness.tasks.classification",
    "benchharness.tasks.detection",
    "benchharness.tasks.segmentation",
    "benchharness.tasks.source_cls",
    "benchharness.evaluators.voc_ap",
    "benchharness.evaluators.voc_det",
    "benchharness.evaluators.coco",
    "benchharness.evaluators.miou",
    "benchharness.evaluators.topk",
)
ENTRY_POINT_GROUP = "benchharness"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded: its entry-point name, target and the error."""

    name: str
    target: str
    error: str
    detail: str


class Registry:
    """A pluggy PluginManager with the built-ins and the entry-point plugins registered."""

    def __init__(self, builtins: Iterable[str] = BUILTIN_MODULES, load_entry_points: bool = True):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.sources: dict[str, str] = {}
        for module_name in builtins:
            self.pm.register(importlib.import_module(module_name), name=module_name)
            self.sources[module_name] = "built-in"
        if load_entry_points:
            self._load_entry_points()

    def _load_entry_points(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
                self.sources[ep.name] = f"entry point {ep.value}" + (
                    f" ({ep.dist.name} {ep.dist.version})" if ep.dist else "")
            except Exception as exc:  # a broken plugin must not take the others down
                self.failures.append(PluginFailure(ep.name, ep.value, f"{type(exc).__name__}: {exc}",
                                                   traceback.format_exc()))

    def register(self, plugin: Any, name: str | None = None) -> None:
        """Register an extra plugin object or module (used by tests and embedding code)."""
        self.pm.register(plugin, name=name)
        self.sources[name or self.pm.get_name(plugin)] = "registered at run time"

    def _collect(self, hook_name: str, key: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        owners: dict[str, str] = {}
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            for item in impl.function() or []:
                name = getattr(item, key)
                if name in found:
                    raise BenchharnessError(f"{hook_name}: {name!r} is registered by both "
                                            f"{owners[name]} and {impl.plugin_name}")
                found[name] = item
                owners[name] = impl.plugin_name
        return found

    def methods(self) -> dict[str, Any]:
        """Every registered Method by name."""
        return self._collect("benchharness_methods", "name")

    def tasks(self) -> dict[str, Any]:
        """Every registered Task by name."""
        return self._collect("benchharness_tasks", "name")

    def evaluators(self) -> dict[str, Any]:
        """Every registered Evaluator by id."""
        return self._collect("benchharness_evaluators", "id")

    def backbones(self) -> dict[str, Any]:
        """Every registered Backbone by name."""
        return self._collect("benchharness_backbones", "name")

    def datasets(self) -> dict[str, Any]:
        """Every registered DatasetSpec by name."""
        return self._collect("benchharness_datasets", "name")

    def get(self, kind: str, name: str):
        """One registered object of ``kind`` (methods, tasks, ...) by name, or a clear error."""
        table = getattr(self, kind)()
        if name not in table:
            raise BenchharnessError(f"unknown {kind[:-1]} {name!r}; available: {', '.join(sorted(table))}"
                                    + self._failure_hint())
        return table[name]

    def _failure_hint(self) -> str:
        if not self.failures:
            return ""
        names = ", ".join(f.name for f in self.failures)
        return f" (plugins that failed to load: {names}; see `benchharness plugins`)"

    def notify_result(self, result: dict) -> list[str]:
        """Call ``benchharness_on_result`` on every plugin; return the errors raised, if any."""
        errors = []
        for impl in self.pm.hook.benchharness_on_result.get_hookimpls():
            try:
                impl.function(result=result)
            except Exception as exc:
                errors.append(f"{impl.plugin_name}: {type(exc).__name__}: {exc}")
        return errors

    def describe(self) -> dict[str, Any]:
        """What is loaded: each plugin with its hooks and what it registers, plus failures."""
        plugins = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: item[0]):
            hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
            registers = {}
            for hook in hooks:
                if hook == "benchharness_on_result":
                    continue
                items = getattr(plugin, hook)() or []
                registers[hook.removeprefix("benchharness_")] = [
                    getattr(i, "name", None) or getattr(i, "id") for i in items]
            plugins.append({"name": name, "source": self.sources.get(name, "?"),
                            "module": getattr(plugin, "__name__", type(plugin).__name__),
                            "hooks": hooks, "registers": registers})
        return {
            "plugins": plugins,
            "methods": sorted(self.methods()),
            "tasks": sorted(self.tasks()),
            "evaluators": sorted(self.evaluators()),
            "backbones": sorted(self.backbones()),
            "datasets": sorted(self.datasets()),
            "failed": [{"name": f.name, "target": f.target, "error": f.error} for f in self.failures],
        }


_default: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _default
    if _default is None:
        _default = Registry()
    return _default
