"""Speed benchmarks, measured side by side in one run; writes benchmarks/out/speed.json.

``demo_seconds``: what `make demo` costs after set-up on this machine, from nothing: generating
the synthetic world (``world_seconds``), running the smoke suite in a fresh results store
(``smoke_suite_seconds``) and printing the leaderboard. The smoke suite's mAPs per method and
protocol (mean and std over its seeds) are written beside the timings.

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
from tabulate import tabulate

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "benchharness.cli"]


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(CLI + args, check=True, cwd=HERE.parent)
    return time.perf_counter() - start


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
        t_board = timed(["leaderboard", "--results", str(results)])
        rows = [json.loads(p.read_text()) for p in (results / "runs").rglob("*.json")]
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    df = pd.DataFrame(rows)
    summary = (df.groupby(["method", "protocol"])["value"].agg(["mean", "std", "count"])
               .round(2).reset_index())
    speed = {
        "demo_seconds": round(t_world + t_suite + t_board, 1),
        "world_seconds": round(t_world, 1),
        "smoke_suite_seconds": round(t_suite, 1),
        "leaderboard_seconds": round(t_board, 1),
        "jobs": len(rows),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "smoke_map": summary.to_dict(orient="records"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps(speed, indent=2) + "\n")
    print(tabulate([(k, v) for k, v in speed.items() if isinstance(v, (int, float))],
                   headers=["figure", "value"], tablefmt="github"))
    print()
    print(tabulate(summary, headers="keys", tablefmt="github", showindex=False))


if __name__ == "__main__":
    main()
