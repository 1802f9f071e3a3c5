"""The leaderboard keeps results of other data and other schedule fractions apart, marked."""

from __future__ import annotations

import json

from benchharness.leaderboard import load_results, render, summarize


def _write(root, name, value, data=None, fraction=None, seed=0):
    result = {"status": "ok", "error": None, "method": "supervised", "group": "sup",
              "task": "voc07-cls", "protocol": "fc8", "metric": "voc07-11pt", "value": value,
              "per_class": {}, "seed": seed, "suite": "s", "config_hash": name}
    if data is not None:
        result["data"] = data
    if fraction is not None:
        result["schedule_fraction"] = fraction
    path = root / "runs" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))


VOC = {"root": "/data/VOC", "key": "aaaaaa111111", "tag": "VOC:aaaaaa", "splits": "1"}
MINE = {"root": "/data/mine", "key": "bbbbbb222222", "tag": "mine:bbbbbb", "splits": "2"}


def test_different_data_are_different_rows(tmp_path):
    _write(tmp_path, "a0", 70.0, VOC, seed=0)
    _write(tmp_path, "a1", 72.0, VOC, seed=1)
    _write(tmp_path, "b0", 30.0, MINE, seed=0)
    _write(tmp_path, "b1", 34.0, MINE, seed=1)
    s = summarize(load_results(tmp_path)).set_index("method")
    assert s.loc["supervised [data VOC:aaaaaa]", "mean"] == 71.0
    assert s.loc["supervised [data mine:bbbbbb]", "mean"] == 32.0
    board = render(load_results(tmp_path))
    assert "Data (results of different data are separate rows): VOC:aaaaaa = /data/VOC; " \
           "mine:bbbbbb = /data/mine." in board
    csv = render(load_results(tmp_path), fmt="csv")
    assert "supervised [data VOC:aaaaaa]" in csv and "supervised [data mine:bbbbbb]" in csv


def test_one_data_identity_needs_no_tag_and_old_results_stand_apart(tmp_path):
    _write(tmp_path, "a0", 70.0, VOC)
    assert set(summarize(load_results(tmp_path))["method"]) == {"supervised"}
    assert "Data (" not in render(load_results(tmp_path))
    _write(tmp_path, "old", 10.0)  # stored before results recorded their data
    assert set(summarize(load_results(tmp_path))["method"]) == {
        "supervised [data VOC:aaaaaa]", "supervised [data unrecorded]"}


def test_schedule_fractions_are_rows_of_their_own(tmp_path):
    _write(tmp_path, "full", 70.0, VOC)
    _write(tmp_path, "tenth", 50.0, VOC, fraction=0.1)
    _write(tmp_path, "thousandth", 20.0, VOC, fraction=0.001)
    s = summarize(load_results(tmp_path)).set_index("method")["mean"].to_dict()
    assert s == {"supervised": 70.0, "supervised †0.1": 50.0, "supervised †0.001": 20.0}
    assert "†F schedule fraction F" in render(load_results(tmp_path))
