"""Slow: the embedded default for real. Supervised must beat random on the small world by 10
points, every self-supervised method must learn its pretext and beat random, and BiGAN must
reconstruct better than its untrained-encoder baseline."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from benchharness.cli import main
from benchharness.suite import find_suite


@pytest.mark.slow
def test_supervised_beats_random_on_the_small_world(tmp_path):
    world = tmp_path / "world"
    results = tmp_path / "results"
    # the smoke suite with its default data_root moved here: it generates its world there
    # (a --data-root the user gives is never filled with one)
    smoke = find_suite("smoke").read_text()
    assert 'data_root = "data/synthetic-small"' in smoke
    suite = tmp_path / "smoke.toml"
    suite.write_text(smoke.replace('data_root = "data/synthetic-small"', f'data_root = "{world.as_posix()}"'))
    out = CliRunner().invoke(main, ["run", "--suite", str(suite),
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
    # the self-supervised methods fill their rows, learn their pretext and transfer better than random
    for method, margin in (("tracking", 0.1), ("sound", 0.1), ("context", 0.1), ("colorization", 0.02)):
        assert values[method] > values["random"] + 1, values
        assert pretexts[method]["value"] > pretexts[method]["chance"] + margin, pretexts[method]
    # BiGAN's fc8 transfer is volatile at this budget (about random); its pretext is not
    assert "lower is better" in pretexts["bigan"]["metric"]
    # On an AVX2-only CPU the same code and seed reconstruct at 0.219 against 0.223 (cc00028 too;
    # 0.224 vs 0.305 on the AVX-512 machine of earlier sessions): BiGAN must still beat its baseline.
    assert pretexts["bigan"]["value"] < pretexts["bigan"]["chance"], pretexts["bigan"]
    # and every method but BiGAN ends better than its own untrained network on the same held-out
    # data (measured at these settings: tracking 0.897 against 0.876, sound 0.289 against 0.031;
    # BiGAN's untrained G draws a near-constant grey, which pixel L2 favours: 0.135 against 0.198)
    for method in ("supervised", "context", "colorization", "tracking", "sound"):
        assert pretexts[method]["value"] > pretexts[method]["value_at_init"], pretexts[method]
