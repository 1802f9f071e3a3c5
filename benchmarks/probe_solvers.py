"""The probes' two SVM solvers side by side: scikit-learn's LinearSVC and the batched torch Newton
solver, on the same features, folds and cost grid (the smoke suite's ``[tasks.voc07-cls.probe]``).

Features: the smoke suite's supervised representation on the small world (from a results cache,
or pretrained here by one ``benchharness run`` of ``probe-fc7``, whose wall time is reported as
``probe_job_seconds``), one stage at a time. Figures:

- ``probe_solver_seconds``: per stage, the cross-validated fit (20 classes x the grid x 3 folds,
  then the refit) under each solver, and ``torch_cuda`` where a GPU is visible;
- ``probe_sklearn_over_torch``: the sum of sklearn's seconds over torch's on this machine's CPU
  (above 1: torch is faster);
- ``probe_same_cost_fraction``: the share of (stage, class) pairs where both pick the same cost;
- ``probe_map``: per stage and solver, the test mAP (voc07-11pt, %); ``probe_max_map_diff`` the
  largest difference between the solvers.

Usage: python benchmarks/probe_solvers.py WORLD [--cache DIR] [--stage conv3 ...] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
STAGES = ("conv3", "conv5", "fc7")


def _representation(world: Path, cache: Path | None, work: Path) -> tuple[Path, float | None]:
    """A cache holding the smoke suite's supervised representation: ``cache`` when it has one,
    else one made here by running the probe-fc7 job (its wall seconds returned too)."""
    if cache is not None and any((cache / "representations").glob("supervised-*")):
        return cache, None
    results = work / "results"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchharness.cli", "run", "--suite", "smoke", "--method",
                    "supervised", "--task", "voc07-cls", "--protocol", "probe-fc7", "--seeds", "1",
                    "--executor", "inline", "--data-root", str(world), "--results", str(results)],
                   check=True, cwd=HERE.parent, stdout=subprocess.DEVNULL)
    return results / "cache", time.perf_counter() - start


def measure(world: Path, cache: Path | None = None, stages=STAGES) -> dict:
    """The figures of the module docstring."""
    from benchharness.data.voc.devkit import VOCDevkit, locate_devkit
    from benchharness.evaluators.voc_ap import evaluate_classification
    from benchharness.interfaces import ClsGroundTruth, Predictions, RunContext
    from benchharness.representation import Representation
    from benchharness.tasks.classification import load_split
    from benchharness.tasks.probe import ProbeConfig, normalized
    from benchharness.tasks.probe_classifier import fit_probe
    from benchharness.tasks.probe_features import probe_features
    from benchharness.data.voc.classes import VOC_CLASSES

    settings = tomllib.loads((HERE / "smoke.toml").read_text())["tasks"]["voc07-cls"]["probe"]
    probe = ProbeConfig.from_mapping(settings)
    work = Path(tempfile.mkdtemp(prefix="bh-probe-"))
    try:
        cache, job_seconds = _representation(world, cache, work)
        rep = Representation.load(next((cache / "representations").glob("supervised-*")))
        cpu = torch.device("cpu")
        ctx = RunContext(cpu, 0, world, work / "cache", "alexnet-small")
        devkit = VOCDevkit(locate_devkit(world))
        size = rep.network.spec.input_size
        splits = {s: load_split(devkit, "2007", s, round(size * 1.25), ctx) for s in ("trainval", "test")}
        devices = {"sklearn": ("sklearn", cpu), "torch": ("torch", cpu)}
        if torch.cuda.is_available():
            devices["torch_cuda"] = ("torch", torch.device("cuda"))
        seconds, maps, same, pairs = {}, {}, 0, 0
        for stage in stages:
            feats = {}
            for split, (_, _, images) in splits.items():
                feats[split], _ = probe_features(
                    rep, rep.network, images, stage, input_size=size, how=probe.view, dims=probe.dims,
                    pool=probe.pool, windows=probe.windows, cache_dir=None, key_settings={}, device=cpu,
                    amp="auto", data_root=world)
            train, test = normalized(feats["trainval"]), normalized(feats["test"])
            test_ids, test_labels = splits["test"][0], splits["test"][1]
            seconds[stage], maps[stage], chosen = {}, {}, {}
            for name, (solver, device) in devices.items():
                start = time.perf_counter()
                fit = fit_probe(train, splits["trainval"][1], test, probe.costs, probe.folds, 0, solver,
                                probe.positive_weight, device, probe.tol, probe.max_iter)
                seconds[stage][name] = round(time.perf_counter() - start, 2)
                scores = Predictions("cls", VOC_CLASSES, test_ids, scores=fit.scores.astype(np.float32))
                truth = ClsGroundTruth(VOC_CLASSES, test_ids, test_labels)
                maps[stage][name] = round(100 * evaluate_classification(scores, truth, "voc07-11pt").mean, 2)
                chosen[name] = fit.chosen
            same += int((chosen["sklearn"] == chosen["torch"]).sum())
            pairs += len(VOC_CLASSES)
            print(f"{stage}: {train.shape[1]} dims, seconds {seconds[stage]}, mAP {maps[stage]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = {name: sum(s[name] for s in seconds.values()) for name in devices}
    out = {"probe_solver_seconds": seconds, "probe_sklearn_over_torch": round(total["sklearn"] / total["torch"], 2),
           "probe_same_cost_fraction": round(same / pairs, 3), "probe_map": maps,
           "probe_max_map_diff": round(max(abs(m["sklearn"] - m["torch"]) for m in maps.values()), 2)}
    if job_seconds is not None:
        out["probe_job_seconds"] = round(job_seconds, 1)
    return out


def main() -> None:
    from speed_file import merge_figures

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", type=Path)
    parser.add_argument("--cache", type=Path, default=None, help="a results cache with the smoke suite's "
                        "supervised representation (else it is pretrained here)")
    parser.add_argument("--stage", dest="stages", action="append", default=None,
                        help=f"a stage to probe (repeatable) [default: {' '.join(STAGES)}]")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    merge_figures(args.out, measure(args.world, args.cache, tuple(args.stages or STAGES)))


if __name__ == "__main__":
    main()
