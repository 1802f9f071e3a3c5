"""Where the smoke suite's time goes, per job kind, from the timings its result files hold.

Every result file carries the runner's ``timing``: ``pretrain`` (the seconds its
representation's pretraining took, the same in every job of that representation: counted once,
so profile a fresh results store), the task's ``data`` (decoding, proposals), ``features`` (frozen
layers on the crop bank, ``voc07-cls`` only), ``train``, ``predict`` (test crops or images)
and ``evaluate`` (the metric), and ``wall_seconds``, the whole job. :func:`profile` sums them
per method (pretraining) and per task and protocol (the rest).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

PHASES = ("data", "features", "train", "predict", "evaluate")


def profile(rows: Iterable[dict]) -> dict:
    """``{"pretrain": {method: s}, "jobs": {"<task> <protocol>": {"jobs": n, <phase>: s, ...,
    "wall": s}}, "total": {<phase>: s, "pretrain": s, "wall": s}}``, seconds rounded to 0.1.
    Under the pool executor these are worker-seconds: the run's wall time is about their sum
    over the number of workers."""
    made: dict[str, tuple[str, float]] = {}  # representation -> (method, its pretraining)
    jobs: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        timing = row.get("timing") or {}
        made[row["representation_key"]] = (row["method"], timing.get("pretrain") or 0.0)
        kind = jobs[f"{row['task']} {row['protocol']}"]
        kind["jobs"] += 1
        for phase in PHASES:
            kind[phase] += timing.get(phase, 0.0)
        kind["wall"] += row.get("wall_seconds", 0.0)
    pretrain: dict[str, float] = defaultdict(float)
    for method, seconds in made.values():
        pretrain[method] += seconds
    total = {phase: sum(k[phase] for k in jobs.values()) for phase in PHASES}
    total["pretrain"] = sum(pretrain.values())
    total["wall"] = sum(k["wall"] for k in jobs.values())
    out = {"pretrain": {m: round(s, 1) for m, s in sorted(pretrain.items())},
           "jobs": {name: {k: (int(v) if k == "jobs" else round(v, 1)) for k, v in kind.items()}
                    for name, kind in sorted(jobs.items())},
           "total": {k: round(v, 1) for k, v in total.items()}}
    return out
