"""The smoke suite's time per job kind (``benchmarks/smoke_profile.py``), on hand-made results."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from smoke_profile import profile  # noqa: E402  (a benchmark script, not a package)


def row(method, rep, task, protocol, wall, cached=0, **phases):
    timing = {"pretrain": {"a": 30.0, "b": 4.0}[rep], "pretrain_cached": cached, **phases}

    return {"method": method, "representation_key": rep, "task": task, "protocol": protocol,
            "timing": timing, "wall_seconds": wall}


def test_pretraining_counts_once_per_representation_and_phases_add_up_per_job_kind():
    rows = [row("sup", "a", "voc07-cls", "fc8", 41.0, features=10.0, train=0.5, evaluate=0.1),
            row("sup", "a", "voc07-cls", "fc8", 1.0, train=0.5, evaluate=0.1),
            row("sup", "a", "voc07-det", "all", 20.0, data=1.0, train=12.0, predict=6.0, evaluate=0.5),
            row("ctx", "b", "voc07-cls", "fc8", 3.0, cached=1, train=2.0, evaluate=0.1)]
    out = profile(rows)
    assert out["pretrain"] == {"ctx": 4.0, "sup": 30.0}  # once per representation
    assert out["jobs"]["voc07-cls fc8"] == {"jobs": 3, "data": 0.0, "features": 10.0, "train": 3.0,
                                            "predict": 0.0, "evaluate": 0.3, "wall": 45.0}
    assert out["jobs"]["voc07-det all"]["train"] == 12.0 and out["jobs"]["voc07-det all"]["jobs"] == 1
    assert out["total"] == {"data": 1.0, "features": 10.0, "train": 15.0, "predict": 6.0,
                            "evaluate": 0.8, "pretrain": 34.0, "wall": 65.0}
