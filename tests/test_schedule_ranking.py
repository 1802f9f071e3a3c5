"""The ranking comparison of two schedules (``benchmarks/schedule_ranking.py``), on stores this
test writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from schedule_ranking import column_means, compare  # noqa: E402  (a script, not a package)


def store(root: Path, values: dict[str, list[float]], task="voc07-det", protocol="all") -> Path:
    for method, seeds in values.items():
        for seed, value in enumerate(seeds):
            path = root / "runs" / "s" / method / f"{task}__{protocol}__seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"status": "ok", "method": method, "task": task,
                                        "protocol": protocol, "seed": seed, "value": value}))
    return root


def test_one_swapped_pair_is_named_with_its_gaps_and_tau(tmp_path):
    full = store(tmp_path / "full", {"a": [30, 32], "b": [20, 22], "c": [10, 12]})
    short = store(tmp_path / "short", {"a": [25, 27], "b": [9, 11], "c": [12, 13]})
    [(column, c)] = compare(column_means(full), column_means(short)).items()
    assert column == "voc07-det all" and c["seeds"] == [2, 2]
    assert c["full"] == ["a", "b", "c"] and c["short"] == ["a", "c", "b"] and not c["same_order"]
    assert c["kendall_tau"] == round(1 / 3, 3)  # 2 concordant pairs, 1 discordant, of 3
    [s] = c["swapped"]
    assert s["pair"] == ["b", "c"] and s["full_gap"] == 10.0 and s["short_gap"] == -2.5
    assert s["short_std"] == [pytest.approx(1.41, abs=0.01), pytest.approx(0.71, abs=0.01)]


def test_the_same_order_and_columns_only_one_store_fills(tmp_path):
    full = store(tmp_path / "full", {"a": [3], "b": [2]})
    store(tmp_path / "full", {"a": [5], "b": [1]}, task="voc12-seg")
    short = store(tmp_path / "short", {"a": [1], "b": [0]})
    result = compare(column_means(full), column_means(short))
    assert list(result) == ["voc07-det all"]
    assert result["voc07-det all"]["same_order"] and result["voc07-det all"]["kendall_tau"] == 1.0
