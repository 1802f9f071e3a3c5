"""One grid under three executors, side by side on this machine.

The grid: the smoke suite's ``random`` and ``supervised`` on ``voc07-cls`` fc8 and fc6-8 with
its seeds, at half its schedule (pretraining included: each executor starts from an empty
store and cache). Figures:

- ``pool2_vs_inline_throughput``: jobs per minute under ``--executor pool --workers 2`` divided
  by jobs per minute under ``inline`` (both use all of torch's threads: two workers get half
  each);
- ``submitit_local_overhead_s``: seconds per job that submitit's local executor (one job at a
  time, as many threads as inline) adds over ``inline``: its process start, pickling and
  polling.

Usage: python benchmarks/executor_throughput.py WORLD [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GRID = ["run", "--suite", "smoke", "--method", "random", "--method", "supervised", "--task", "voc07-cls",
        "--protocol", "fc8", "--protocol", "fc6-8", "--schedule-fraction", "0.5"]
EXECUTORS = {"inline": ["--executor", "inline"],
             "pool2": ["--executor", "pool", "--workers", "2"],
             "submitit_local": ["--executor", "submitit", "--executor-option", "cluster=local",
                                "--workers", "1"]}


def measure(world: Path) -> dict:
    """Wall seconds and jobs of the grid under each executor, and the two figures."""
    seconds, jobs = {}, {}
    work = Path(tempfile.mkdtemp(prefix="bh-exec-"))
    try:
        for name, flags in EXECUTORS.items():
            results = work / name
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "benchharness.cli", *GRID, "--data-root", str(world),
                            "--results", str(results), *flags], check=True, cwd=HERE.parent,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds[name] = time.perf_counter() - start
            jobs[name] = sum(1 for p in (results / "runs").rglob("*.json")
                             if json.loads(p.read_text())["status"] == "ok")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_minute = {name: 60 * jobs[name] / seconds[name] for name in seconds}
    return {"pool2_vs_inline_throughput": round(per_minute["pool2"] / per_minute["inline"], 2),
            "submitit_local_overhead_s": round((seconds["submitit_local"] - seconds["inline"]) / jobs["inline"], 1),
            "executor_grid_detail": {"jobs": jobs, "seconds": {k: round(v, 1) for k, v in seconds.items()}}}


def main() -> None:
    from speed_file import merge_figures

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", type=Path)
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    merge_figures(args.out, measure(args.world))


if __name__ == "__main__":
    main()
