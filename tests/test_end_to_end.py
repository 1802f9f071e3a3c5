"""Slow: the embedded default for real. Supervised must beat random on the small world, and so must
the video and sound methods."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from benchharness.cli import main


@pytest.mark.slow
def test_supervised_beats_random_on_the_small_world(tmp_path):
    world = tmp_path / "world"
    results = tmp_path / "results"
    out = CliRunner().invoke(main, ["run", "--suite", "smoke", "--data-root", str(world),
                                    "--results", str(results), "--protocol", "fc8",
                                    "--seeds", "1", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    assert (world / ".complete").is_file()  # the smoke suite generated its world
    values, pretexts = {}, {}
    for path in (results / "runs").rglob("*.json"):
        r = json.loads(path.read_text())
        values[r["method"]] = r["value"]
        pretexts[r["method"]] = r["pretext"]
        assert r["status"] == "ok"
    assert values["supervised"] >= values["random"] + 10, values
    # the video and sound methods fill their rows, learn their pretext and transfer better than random
    for method in ("tracking", "sound"):
        assert values[method] > values["random"] + 1, values
        assert pretexts[method]["value"] > pretexts[method]["chance"] + 0.1, pretexts[method]
