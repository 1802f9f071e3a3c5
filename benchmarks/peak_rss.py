"""Peak memory of supervised pretraining on the small world's source set and on one 4x its size.

The 4x set is built in a temporary folder from symlinks to the small world's source images
(train and val, the same classes, every file four times under new names: no pixels copied).
The 1x set is built the same way with one link per file, so both read through the same path.
Each pretraining (one epoch, the small AlexNet) runs in its own process; figures:

``pretrain_peak_rss_ratio_4x``: the trainer process's peak resident memory (``ru_maxrss``) on
4x over 1x, in ``stream`` mode: what ``data = "auto"`` picks at ImageNet's scale (the 4x set,
~150 MB decoded, is still far below the 2 GiB where ``auto`` switches, so it is set here).
``pretrain_peak_pss_ratio_4x``: the same for the whole process tree (trainer plus DataLoader
workers), summing proportional set sizes (shared pages counted once) polled from ``/proc``.
``..._memory`` beside each: the same ratios in ``memory`` mode, for comparison. The process
starts at about 1 GiB (torch and the plugins imported, before any image), which dilutes every
ratio; ``pretrain_peak_rss_growth_4x_mib`` (4x minus 1x, MiB) shows what the data itself adds:
the decoded set (~125 MiB more at 4x, train and val) in memory mode, little when streamed.

Usage: python benchmarks/peak_rss.py [--world data/synthetic-small] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from speed_file import merge_figures

HERE = Path(__file__).resolve().parent

_TRAIN = """
import json, resource, sys, torch
from pathlib import Path
from benchharness.interfaces import RunContext
from benchharness.plugins import Registry
root, mode = Path(sys.argv[1]), sys.argv[2]
ctx = RunContext(torch.device("cpu"), 0, root, root, "alexnet-small",
                 config={"epochs": 1, "batch_size": 64, "data": mode, "data_workers": 2},
                 log=lambda m: None)
rep = Registry().methods()["supervised"].pretrain(ctx)
print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "images": rep.meta["pretrain_images"], "data": rep.meta["data"],
                  "seconds": rep.meta["train_seconds"]}))
"""


def linked_world(world: Path, out: Path, copies: int) -> Path:
    """A data root whose ``source/{train,val}`` hold ``copies`` symlinks to every source image of
    ``world`` (same classes, new file names); returns it."""
    for split in ("train", "val"):
        for class_dir in sorted((world / "source" / split).iterdir()):
            target = out / "source" / split / class_dir.name
            target.mkdir(parents=True)
            for image in sorted(class_dir.iterdir()):
                for k in range(copies):
                    os.symlink(image.resolve(), target / f"c{k}_{image.name}")
    return out


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _tree_pss_kib(pid: int) -> int:
    """Proportional set size of ``pid`` and all its descendants, KiB (0 for what has exited)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
        stack.extend(_children(p))
    return total


def measure_one(root: Path, mode: str) -> dict:
    """One pretraining in a fresh process: its peak RSS, the tree's peak PSS, its own report."""
    proc = subprocess.Popen([sys.executable, "-c", _TRAIN, str(root), mode], stdout=subprocess.PIPE,
                            text=True, cwd=HERE.parent)
    peak_pss = 0
    while proc.poll() is None:
        peak_pss = max(peak_pss, _tree_pss_kib(proc.pid))
        time.sleep(0.05)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"pretraining ({mode}, {root}) failed with exit status {proc.returncode}")
    report = json.loads(out.strip().splitlines()[-1])
    peak_rss = report.pop("maxrss_kib")
    return {**report, "seconds": round(report["seconds"], 1),
            "peak_rss_mib": round(peak_rss / 1024, 1), "peak_pss_mib": round(peak_pss / 1024, 1)}


def measure(world: Path) -> dict:
    """Both modes on the 1x and the 4x linked sets; the ratios and the raw figures."""
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bh-rss-") as tmp:
        roots = {scale: linked_world(world, Path(tmp) / f"x{scale}", scale) for scale in (1, 4)}
        for mode in ("stream", "memory"):
            for scale, root in roots.items():
                runs[f"{mode}_x{scale}"] = measure_one(root, mode)

    def ratio(mode, key):
        return round(runs[f"{mode}_x4"][key] / runs[f"{mode}_x1"][key], 3)

    def growth(mode):
        return round(runs[f"{mode}_x4"]["peak_rss_mib"] - runs[f"{mode}_x1"]["peak_rss_mib"], 1)

    return {"pretrain_peak_rss_ratio_4x": ratio("stream", "peak_rss_mib"),
            "pretrain_peak_rss_ratio_4x_memory": ratio("memory", "peak_rss_mib"),
            "pretrain_peak_pss_ratio_4x": ratio("stream", "peak_pss_mib"),
            "pretrain_peak_pss_ratio_4x_memory": ratio("memory", "peak_pss_mib"),
            "pretrain_peak_rss_growth_4x_mib": growth("stream"),
            "pretrain_peak_rss_growth_4x_mib_memory": growth("memory"),
            "pretrain_peak_rss_detail": {"data_mode": "stream", "data_workers": 2, "epochs": 1,
                                         "batch_size": 64, "runs": runs}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=HERE.parent / "data" / "synthetic-small")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    merge_figures(args.out, measure(args.world))


if __name__ == "__main__":
    main()
