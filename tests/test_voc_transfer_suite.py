"""The real suite's exact pipeline with a CaffeNet checkpoint, shrunk by --schedule-fraction."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from benchharness.cli import main
from caffe_files import caffenet_file


@pytest.mark.slow
def test_voc_transfer_runs_every_task_and_protocol_with_a_caffemodel(tiny_world, tmp_path):
    model = tmp_path / "caffenet.caffemodel"
    caffenet_file(model, "layers", caffe_fillers=True, seed=1)
    runner = CliRunner()
    args = ["run", "--suite", "voc-transfer", "--schedule-fraction", "0.0001", "--seeds", "1",
            "--data-root", str(tiny_world), "--results", str(tmp_path / "results"),
            "--method", f"checkpoint:{model}"]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    results = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").rglob("*.json")]
    cells = {(r["task"], r["protocol"]) for r in results if r["status"] == "ok"}
    assert cells == {("voc07-cls", "fc8"), ("voc07-cls", "fc6-8"), ("voc07-cls", "all"),
                     ("voc07-det", "all"), ("voc12-seg", "all")}
    for r in results:
        assert r["schedule_fraction"] == 0.0001 and r["backbone"] == "caffenet"
        assert r["representation"]["load_report"]["unused"][0].startswith("fc8 (InnerProduct)")
    cls = {r["protocol"]: r for r in results if r["task"] == "voc07-cls"}
    assert cls["fc8"]["metric"] == "sklearn-ap" and "voc07-11pt" in cls["fc8"]["per_metric"]
    seg = next(r for r in results if r["task"] == "voc12-seg")
    assert seg["info"]["split"] == "seg11valid"
    board = runner.invoke(main, ["leaderboard", "--results", str(tmp_path / "results")])
    assert board.exit_code == 0 and "†" in board.output
