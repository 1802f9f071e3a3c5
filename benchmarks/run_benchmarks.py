"""Speed benchmarks, measured side by side in one run; writes benchmarks/out/speed.json.

``demo_seconds``: what `make demo` costs after set-up on this machine: its own two commands
(``benchharness run --suite smoke``, ``benchharness leaderboard --reference``) in a fresh
results store, the synthetic world already generated (set-up, ``world_seconds``, selective
search included; ``demo_with_world_seconds`` adds it). ``smoke_profile`` splits the suite's
time per job kind (pretraining per method; data, features, train, predict and evaluate per
task and protocol; see ``smoke_profile.py``). The smoke suite's mAPs per method and protocol
(mean and std over its seeds) are written beside the timings.

``cpu_step_efficiency_<loop>``: every training loop's steps per second as a fraction of the
bare network's on the same batch (``cpu_step_efficiency.py``); ``cuda_step_efficiency_<loop>``
too where torch sees a GPU.

``frozen_cache_speedup``: the fc8 protocol on the supervised representation, same data, same
schedule, uncached (frozen layers run for every crop of every epoch) vs cached (features read
from the cache, as every job after the first one does), with both mAPs; ``..._cold`` counts the
one-off feature computation in the cached time.

``det_eval_speedup``: the detection AP evaluator vs a plain per-detection loop on 5,000 images
x 20 classes x 50 detections per image and class (``det_eval_speed.py``), identical APs.

``probe_sklearn_over_torch``, ``probe_same_cost_fraction``, ``probe_max_map_diff``: the linear
probes' two SVM solvers on the smoke suite's supervised representation, same features and folds
(``probe_solvers.py``; per stage: ``probe_solver_seconds``, ``probe_map``).

``pool2_vs_inline_throughput`` and ``submitit_local_overhead_s``: one grid under ``inline``,
``pool`` with 2 workers and submitit's local executor (``executor_throughput.py``).
``pretrain_peak_rss_ratio_4x``: peak resident memory of supervised pretraining (streamed from
disk, ``data = "stream"``) on a source set 4x the small world's over that on the small world's
own, with the in-memory mode's ratio beside it (``peak_rss.py``; goal: at most 1.3).

A GPU figure (``train_step_efficiency``) is measured only where CUDA is available.

Usage: python benchmarks/run_benchmarks.py [--out benchmarks/out] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from tabulate import tabulate

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cpu_step_efficiency  # noqa: E402  (sibling scripts of this one)
import det_eval_speed  # noqa: E402
import executor_throughput  # noqa: E402
import peak_rss  # noqa: E402
import probe_solvers  # noqa: E402
import train_step_efficiency  # noqa: E402
from smoke_profile import profile  # noqa: E402

CLI = [sys.executable, "-m", "benchharness.cli"]


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(CLI + args, check=True, cwd=HERE.parent)
    return time.perf_counter() - start


def frozen_cache_speedup(world: Path, cache: Path) -> dict:
    """fc8 transfer of the cached supervised representation: uncached vs cold vs warm cache."""
    from benchharness.evaluators.voc_ap import evaluate_classification
    from benchharness.interfaces import RunContext
    from benchharness.representation import Representation
    from benchharness.suite import load_suite
    from benchharness.tasks.classification import transfer

    rep = Representation.load(next((cache / "representations").glob("supervised-*")))
    config = dict(load_suite("smoke").task_config["voc07-cls"])
    timings, maps = {}, {}
    feature_dir = Path(tempfile.mkdtemp(prefix="bh-feat-"))
    try:
        for name, cached in (("uncached", False), ("cold", True), ("warm", True)):
            ctx = RunContext(torch.device("cpu"), 0, world, feature_dir, "alexnet-small",
                             config={**config, "feature_cache": cached})
            start = time.perf_counter()
            out = transfer(rep, "fc8", ctx)
            timings[name] = time.perf_counter() - start - out.timing["data"]
            maps[name] = 100 * evaluate_classification(out.predictions, out.ground_truth, out.metric).mean
    finally:
        shutil.rmtree(feature_dir, ignore_errors=True)
    return {"frozen_cache_speedup": round(timings["uncached"] / timings["warm"], 1),
            "frozen_cache_speedup_cold": round(timings["uncached"] / timings["cold"], 2),
            "fc8_seconds": {k: round(v, 2) for k, v in timings.items()},
            "fc8_map": {k: round(v, 2) for k, v in maps.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bh-bench-"))
    world, results = work / "world", work / "results"
    try:
        t_world = timed(["data", "synth", "--out", str(world), "--size", "small", "--seed", "0"])
        t_suite = timed(["run", "--suite", "smoke", "--data-root", str(world), "--results", str(results)])
        t_board = timed(["leaderboard", "--reference", "--results", str(results)])
        rows = [json.loads(p.read_text()) for p in (results / "runs").rglob("*.json")]
        cache = frozen_cache_speedup(world, results / "cache")
        probes = probe_solvers.measure(world, results / "cache")
        det_eval = det_eval_speed.measure()
        steps = cpu_step_efficiency.measure_available(world)
        executors = executor_throughput.measure(world)
        memory = peak_rss.measure(world)
        gpu = train_step_efficiency.measure(torch.device("cuda")) if torch.cuda.is_available() else {}
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    df = pd.DataFrame(rows)
    summary = (df.groupby(["method", "task", "protocol"])["value"].agg(["mean", "std", "count"])
               .round(2).reset_index())
    speed = {
        "demo_seconds": round(t_suite + t_board, 1),
        "demo_with_world_seconds": round(t_world + t_suite + t_board, 1),
        "world_seconds": round(t_world, 1),
        "smoke_suite_seconds": round(t_suite, 1),
        "leaderboard_seconds": round(t_board, 1),
        "jobs": len(rows),
        "smoke_profile": profile(rows),
        **steps,
        **cache,
        **probes,
        **det_eval,
        **executors,
        **memory,
        **gpu,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "smoke_map": summary.to_dict(orient="records"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps(speed, indent=2) + "\n")
    print(tabulate([(k, v) for k, v in speed.items() if isinstance(v, (int, float, dict))
                    and k not in ("machine", "smoke_profile") and not k.endswith("_detail")],
                   headers=["figure", "value"], tablefmt="github"))
    print()
    print(tabulate(summary, headers="keys", tablefmt="github", showindex=False))


if __name__ == "__main__":
    main()
