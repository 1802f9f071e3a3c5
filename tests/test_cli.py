"""The command line as a user drives it: run, resume, leaderboard, data synth, missing VOC."""

from __future__ import annotations

import json

from click.testing import CliRunner

from benchharness.cli import main


def test_run_then_leaderboard(tmp_path, tiny_world, fast_suite):
    cli = CliRunner()
    results = tmp_path / "results"
    args = ["run", "--suite", str(fast_suite), "--data-root", str(tiny_world), "--results",
            str(results), "--protocol", "fc8", "--seeds", "1", "--device", "cpu"]
    first = cli.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "finished: 1 run, 0 already done, 0 failed" in first.output
    again = cli.invoke(main, args)
    assert "finished: 0 run, 1 already done, 0 failed" in again.output

    board = cli.invoke(main, ["leaderboard", "--results", str(results)])
    assert board.exit_code == 0, board.output
    assert "| none" in board.output and "random" in board.output
    assert "cls fc8" in board.output
    csv = cli.invoke(main, ["leaderboard", "--results", str(results), "--format", "csv"])
    assert "random" in csv.output
    ref = cli.invoke(main, ["leaderboard", "--results", str(results), "--reference"])
    assert "[published: donahue2017_thesis]" in ref.output


def test_dry_run_lists_the_grid(tiny_world, fast_suite):
    out = CliRunner().invoke(main, ["run", "--suite", str(fast_suite), "--data-root",
                                    str(tiny_world), "--method", "random", "--method",
                                    "supervised", "--dry-run"])
    assert out.exit_code == 0, out.output
    rows = [line.split("\t") for line in out.output.strip().splitlines() if "\t" in line]
    assert len(rows) == 8  # 2 methods x 2 protocols x 2 seeds
    assert {r[0] for r in rows} == {"random", "supervised"}


def test_real_suite_without_voc_says_where_and_how(tmp_path):
    out = CliRunner().invoke(main, ["run", "--suite", "voc-transfer", "--data-root",
                                    str(tmp_path / "nothing"), "--results", str(tmp_path / "r")])
    assert out.exit_code == 2
    assert "error:" in out.output and "VOCdevkit" in out.output
    assert "benchharness data fetch voc2007" in out.output or "host.robots.ox.ac.uk" in out.output
    assert not (tmp_path / "r").exists()


def test_bad_suite_file_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\nbogus = 1\n")
    out = CliRunner().invoke(main, ["run", "--suite", str(bad)])
    assert out.exit_code == 2
    assert "bad.toml: unknown keys ['bogus']" in out.output


def test_data_synth_writes_a_complete_world(tmp_path):
    out = CliRunner().invoke(main, ["data", "synth", "--out", str(tmp_path / "w"), "--size", "tiny",
                                    "--seed", "5"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "w" / ".complete").is_file()
    assert json.loads((tmp_path / "w" / "world.json").read_text())["seed"] == 5


def test_help_explains_method_specs():
    out = CliRunner().invoke(main, ["run", "--help"])
    assert "checkpoint:PATH" in out.output and "--seeds" in out.output


def test_run_stops_on_broken_data_before_compute(tmp_path, tiny_world, fast_suite):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_world, broken)
    xml = sorted((broken / "VOCdevkit" / "VOC2007" / "Annotations").glob("*.xml"))[0]
    xml.write_text(xml.read_text().replace("<name>", "<name>unicorn", 1))
    out = CliRunner().invoke(main, ["run", "--suite", str(fast_suite), "--data-root", str(broken),
                                    "--results", str(tmp_path / "r")])
    assert out.exit_code == 2
    assert xml.name in out.output and "unicorn" in out.output
    assert not (tmp_path / "r").exists()
    check = CliRunner().invoke(main, ["data", "check", str(broken), "--quick"])
    assert check.exit_code == 1 and xml.name in check.output
    clean = CliRunner().invoke(main, ["data", "check", str(tiny_world)])
    assert clean.exit_code == 0 and "no problems found" in clean.output


def test_exported_predictions_reproduce_the_stored_number(tmp_path, tiny_world, fast_suite):
    results = tmp_path / "results"
    cli = CliRunner()
    run = cli.invoke(main, ["run", "--suite", str(fast_suite), "--data-root", str(tiny_world),
                            "--results", str(results), "--protocol", "fc8", "--seeds", "1"])
    assert run.exit_code == 0, run.output
    [path] = (results / "runs").rglob("*.json")
    stored = json.loads(path.read_text())
    export = stored["export"]
    assert export["split"] == "test" and export["year"] == "2007"
    for metric in ("voc07-11pt", "sklearn-ap", "voc10-area"):
        out = cli.invoke(main, ["evaluate", "cls", "--devkit", str(tiny_world), "--year", "2007",
                                "--split", "test", "--results", export["dir"], "--metric", metric,
                                "--json"])
        assert out.exit_code == 0, out.output
        assert abs(100 * json.loads(out.output)["mean"] - stored["per_metric"][metric]) < 1e-6


DET_SEG_SUITE = """
name = "detseg"
backbone = "alexnet-small"
seeds = 1

[methods]
use = ["random"]

[tasks]
use = ["voc07-det", "voc12-seg"]

[tasks.voc07-det]
protocols = ["all"]
epochs = 1
scale = 96
max_size = 160
rois_per_image = 16

[tasks.voc12-seg]
protocols = ["all"]
epochs = 1
batch_size = 4
"""


def test_exported_detections_and_masks_reproduce_the_stored_numbers(tmp_path, tiny_world):
    suite = tmp_path / "detseg.toml"
    suite.write_text(DET_SEG_SUITE)
    results = tmp_path / "results"
    cli = CliRunner()
    run = cli.invoke(main, ["run", "--suite", str(suite), "--data-root", str(tiny_world),
                            "--results", str(results)])
    assert run.exit_code == 0, run.output
    stored = {r["task"]: r for r in map(json.loads, map(lambda p: p.read_text(),
                                                         (results / "runs").rglob("*.json")))}
    assert set(stored) == {"voc07-det", "voc12-seg"}
    checks = [("det", "voc07-det", "2007", "test", ("voc07-11pt", "coco-ap50")),
              ("seg", "voc12-seg", "2012", "val", ("miou",))]
    for kind, task, year, split, metrics in checks:
        result = stored[task]
        assert result["status"] == "ok", result.get("error")
        assert result["export"]["split"] == split and result["export"]["year"] == year
        for metric in metrics:
            out = cli.invoke(main, ["evaluate", kind, "--devkit", str(tiny_world), "--year", year,
                                    "--split", split, "--results", result["export"]["dir"],
                                    "--metric", metric, "--json"])
            assert out.exit_code == 0, out.output
            assert abs(100 * json.loads(out.output)["mean"] - result["per_metric"][metric]) < 1e-6
    board = cli.invoke(main, ["leaderboard", "--results", str(results)])
    assert board.exit_code == 0, board.output
    row = next(line for line in board.output.splitlines() if "random" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[-2] != "" and cells[-1] != ""  # det and seg columns filled


def test_a_task_asked_for_uses_the_protocols_of_its_suite_section(tiny_world):
    """smoke.toml configures voc07-det with protocol all and one seed."""
    out = CliRunner().invoke(main, ["run", "--suite", "smoke", "--data-root", str(tiny_world),
                                    "--method", "random", "--task", "voc07-det", "--dry-run"])
    assert out.exit_code == 0, out.output
    rows = [line.split("\t") for line in out.output.strip().splitlines() if "\t" in line]
    assert len(rows) == 1 and all("voc07-det" in r and "all" in r for r in rows)
