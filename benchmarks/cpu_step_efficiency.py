"""``cpu_step_efficiency_<loop>``: each training loop's steps per second as a fraction of the bare
network's (goal: at least 0.8 for every loop).

The loops: the pretraining of every method plugin that trains by optimizer steps (the smoke
suite's ``supervised``, ``context``, ``colorization``, ``bigan``, ``tracking``, ``sound``, and the
table53 suite's ``autoencoder``, ``inpainting``, ``jigsaw``, ``bigan-d``, ``bigan-lr``,
``bigan-jlr``, ``egomotion``, each with its suite's settings; ``kmeans`` makes no optimizer
step), found through the registry, and the transfer
loops (``voc07-cls`` under ``fc8``, ``fc6-8`` and ``all``; ``voc07-det``'s Fast R-CNN and
``voc12-seg``'s FCN-32s, both under ``all``, the latter two on the random-init representation
as the classification ones). Each runs as the runner runs it (a RunContext with a cache and,
for pretraining, a state directory), with its suite's settings on the synthetic world and
a schedule shortened to a few dozen steps (``LOOPS``), while a
:class:`~step_recorder.StepRecorder` times its optimizer steps and captures a few iterations
after a warm-up. The bare rate is that of the captured iterations replayed with nothing around
them (:func:`~step_recorder.replay`: the same modules, batch and input size, optimizers and
modes, data in memory). ``<device>_step_efficiency_detail`` holds per loop both rates, the steps
made and timed and the module calls the bare step replays. On a GPU (``--device cuda``) the
figures are named ``cuda_step_efficiency_<loop>``.

Usage: python benchmarks/cpu_step_efficiency.py [--data-root DIR] [--device cpu|cuda]
       [--loop NAME ...] [--backbone NAME] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from benchharness.interfaces import RunContext
from benchharness.plugins import Registry
from benchharness.suite import Suite, load_suite
from speed_file import merge_figures
from step_recorder import StepRecorder, replay

HERE = Path(__file__).resolve().parent
DEFAULT_DATA_ROOT = HERE.parent / "data" / "synthetic-small"


@dataclass(frozen=True)
class Loop:
    """One training loop: a method's pretraining (``kind = "methods"``) or a task's transfer
    under ``protocol`` (``"tasks"``); ``settings`` replace those of ``suite`` (a shorter
    schedule, less testing after the loop)."""

    name: str
    kind: str
    plugin: str
    protocol: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    suite: str = "smoke"


# About 40-90 optimizer steps each (the steps per epoch of the small world in the comments).
LOOPS = (
    Loop("supervised", "methods", "supervised", settings={"epochs": 2}),  # 37 steps an epoch
    Loop("context", "methods", "context", settings={"steps": 60}),
    Loop("colorization", "methods", "colorization", settings={"steps": 60}),
    Loop("bigan", "methods", "bigan", settings={"steps": 80}),
    Loop("tracking", "methods", "tracking", settings={"epochs": 3, "warmup_epochs": 1}),  # ~18
    Loop("sound", "methods", "sound", settings={"epochs": 5}),  # 9 steps an epoch
    Loop("autoencoder", "methods", "autoencoder", settings={"steps": 60}, suite="table53"),
    Loop("inpainting", "methods", "inpainting", settings={"steps": 60}, suite="table53"),
    Loop("jigsaw", "methods", "jigsaw", settings={"steps": 60}, suite="table53"),
    Loop("bigan_d", "methods", "bigan-d", settings={"steps": 60}, suite="table53"),
    Loop("bigan_lr", "methods", "bigan-lr", settings={"steps": 60}, suite="table53"),
    Loop("bigan_jlr", "methods", "bigan-jlr", settings={"steps": 60}, suite="table53"),
    Loop("egomotion", "methods", "egomotion", settings={"epochs": 1}, suite="table53"),  # 162
    Loop("cls_fc8", "tasks", "voc07-cls", "fc8", {"epochs": 4, "test_crops": 1}),  # 15
    Loop("cls_fc6_8", "tasks", "voc07-cls", "fc6-8", {"epochs": 4, "test_crops": 1}),
    Loop("cls_all", "tasks", "voc07-cls", "all", {"epochs": 3, "test_crops": 1}),
    Loop("det", "tasks", "voc07-det", "all", {"iterations": 50}),
    Loop("seg", "tasks", "voc12-seg", "all", {"iterations": 40}),
)
LOOP_NAMES = tuple(loop.name for loop in LOOPS)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Harness:
    """What the loops need, built once: the registry, the suites (smoke's backbone for all), a
    scratch directory (cache and pretraining state) and, for the transfer loops, a random-init
    representation."""

    def __init__(self, device: torch.device, data_root: Path, work: Path, backbone: str | None = None):
        self.device, self.data_root, self.work = device, Path(data_root), work
        self.registry = Registry()
        self.suite: Suite = load_suite("smoke")
        if backbone:  # e.g. `alexnet` at 227 px on a GPU
            self.suite.backbone = backbone
        self._suites = {"smoke": self.suite}
        self._representation = None

    def method_config(self, loop: Loop) -> dict:
        """The method's section of the loop's suite, with the loop's settings over it."""
        if loop.suite not in self._suites:
            self._suites[loop.suite] = load_suite(loop.suite)
        return {**self._suites[loop.suite].method_config.get(loop.plugin, {}), **loop.settings}

    def context(self, config: dict, state_dir: Path | None = None) -> RunContext:
        """A RunContext as the runner builds it (quiet: no progress bars)."""
        backbone = self.registry.get("backbones", self.suite.backbone)
        return RunContext(device=self.device, seed=0, data_root=self.data_root,
                          cache_dir=self.work / "cache", backbone=self.suite.backbone, config=config,
                          log=_log, backbone_factory=backbone.build, state_dir=state_dir)

    def representation(self):
        """The ``random`` method's representation (built on first use)."""
        if self._representation is None:
            config = dict(self.suite.method_config.get("random", {}))
            self._representation = self.registry.get("methods", "random").pretrain(self.context(config))
        return self._representation

    def runner(self, loop: Loop) -> Callable[[], Any]:
        """A call that runs ``loop`` once, everything before it (data, features) included."""
        if loop.kind == "methods":
            method = self.registry.get("methods", loop.plugin)
            ctx = self.context(self.method_config(loop), state_dir=self.work / ".partial" / loop.name)
            return lambda: method.pretrain(ctx)
        task = self.registry.get("tasks", loop.plugin)
        config = {**self.suite.task_config.get(loop.plugin, {}), **loop.settings}
        if isinstance(config.get(loop.protocol), dict):  # the protocol's table would override them
            config[loop.protocol] = {**config[loop.protocol], **loop.settings}
        rep = self.representation()
        ctx = self.context(config)
        return lambda: task.transfer(rep, loop.protocol, ctx)


def measure_loop(run: Callable[[], Any], device: torch.device, warmup: int = 3,
                 capture: int = 3) -> dict:
    """Run a training loop under a StepRecorder, then replay its captured iterations: the loop's
    and the bare step's rates, their ratio and what was timed."""
    start = time.perf_counter()
    with StepRecorder(device, warmup, capture) as recorder:
        run()
    loop_rate = recorder.steps_per_second()
    bare = replay(recorder.iterations, device)
    return {"loop_steps_per_second": round(loop_rate, 2),
            "bare_steps_per_second": round(bare.per_second, 2),
            "efficiency": round(loop_rate / bare.per_second, 3),
            "steps": recorder.steps, "timed_steps": recorder.timed_steps,
            "optimizers": len(recorder.step_counts),
            "bare_iterations": bare.iterations,
            "replayed_calls": [type(c.module).__name__ for c in recorder.iterations[0].calls],
            "seconds": round(time.perf_counter() - start, 1)}


def figures(detail: dict[str, dict], device: torch.device, seconds: float) -> dict:
    """The speed-file figures of per-loop results: ``<device>_step_efficiency_<loop>`` (the
    device type, ``cpu`` or ``cuda``), the detail and the benchmark's duration."""
    prefix = f"{device.type}_step_efficiency"
    out: dict[str, Any] = {f"{prefix}_{name}": result["efficiency"] for name, result in detail.items()}
    out[f"{prefix}_detail"] = detail
    out[f"{prefix}_seconds"] = round(seconds, 1)
    return out


def measure(device: torch.device | str = "cpu", data_root: Path = DEFAULT_DATA_ROOT,
            loops: tuple[str, ...] | None = None, backbone: str | None = None) -> dict:
    """Step efficiency of every loop of ``LOOPS`` (or those named in ``loops``) on ``device``."""
    device = torch.device(device)
    chosen = [loop for loop in LOOPS if loops is None or loop.name in loops]
    if not (Path(data_root) / "VOCdevkit").is_dir():
        raise SystemExit(f"{data_root}: no synthetic world there (make one with `benchharness "
                         "data synth --out DIR --size small`, or pass --data-root)")
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bh-step-eff-"))
    detail = {}
    try:
        harness = Harness(device, data_root, work, backbone)
        for loop in chosen:
            detail[loop.name] = measure_loop(harness.runner(loop), device)
            d = detail[loop.name]
            _log(f"{loop.name:13s} loop {d['loop_steps_per_second']:8.2f} steps/s  bare "
                 f"{d['bare_steps_per_second']:8.2f} steps/s  efficiency {d['efficiency']:.3f}  "
                 f"({d['seconds']:.0f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures(detail, device, time.perf_counter() - start)


def measure_available(data_root: Path) -> dict:
    """The CPU figures, and the CUDA ones too where torch sees a GPU."""
    out = measure(torch.device("cpu"), data_root)
    if torch.cuda.is_available():
        out.update(measure(torch.device("cuda"), data_root))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help="a synthetic world (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--loop", action="append", choices=LOOP_NAMES, default=None,
                        help="measure only this loop (repeatable)")
    parser.add_argument("--backbone", default=None,
                        help="instead of the smoke suite's alexnet-small (e.g. alexnet, 227 px)")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    merge_figures(args.out, measure(torch.device(args.device), args.data_root,
                                    tuple(args.loop) if args.loop else None, args.backbone))


if __name__ == "__main__":
    main()
