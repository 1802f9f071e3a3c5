"""The plugin contract: every hook benchharness calls, each documented.

A plugin is a module (or object) with functions named like the hooks below and decorated with
``benchharness.hookimpl``. Built-in methods live in ``plugins/`` and are registered through the
``benchharness`` entry-point group in ``pyproject.toml``, exactly as a third-party plugin is::

    [project.entry-points.benchharness]
    mymethod = "my_package.my_module"

Registration hooks return a list; the core concatenates the lists of all plugins.
"""

from __future__ import annotations

import pluggy

PROJECT = "benchharness"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def benchharness_methods():
    """Return a list of :class:`benchharness.interfaces.Method` this plugin provides.

    A method turns data into a Representation through ``pretrain(ctx)``. Names must be unique
    across all loaded plugins.
    """


@hookspec
def benchharness_tasks():
    """Return a list of :class:`benchharness.interfaces.Task` this plugin provides.

    A task transfers any Representation to a target dataset under a protocol (``fc8``,
    ``fc6-8``, ``all``...) and returns predictions with their ground truth.
    """


@hookspec
def benchharness_evaluators():
    """Return a list of :class:`benchharness.interfaces.Evaluator` this plugin provides.

    An evaluator knows only predictions and ground truth; its ``id`` (``voc07-11pt``,
    ``miou``...) is recorded beside every number it produces.
    """


@hookspec
def benchharness_backbones():
    """Return a list of :class:`benchharness.interfaces.Backbone` this plugin provides.

    Every backbone exposes the stages ``conv1``..``conv5``, ``fc6``, ``fc7`` so that each
    protocol means the same thing for every method.
    """


@hookspec
def benchharness_datasets():
    """Return a list of :class:`benchharness.interfaces.DatasetSpec` this plugin provides."""


@hookspec
def benchharness_on_result(result):
    """Called once for every job result after it has been written to the results store.

    ``result`` is the result as a dict (the same content as its JSON file), including failed
    jobs (``status == "failed"``). Loggers, trackers and notifiers plug in here. An exception
    raised here is reported and does not stop the run.

    It is called in the process that drives the run, never in a pool worker or a cluster job:
    those executors hand each result back and the driver calls the hook with the stored result
    (a job that died before storing one comes with its ids, ``status`` and ``error`` only).
    """
