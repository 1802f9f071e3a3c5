"""Method variants: ``[methods."NAME"]`` with ``base``, resolved, planned, run and refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchharness.cli import main
from benchharness.interfaces import BenchharnessError
from benchharness.leaderboard import load_results, summarize
from benchharness.plugins import Registry
from benchharness.runner import Runner, plan
from benchharness.suite import Suite, load_suite

SUITE = """
name = "var"
backbone = "alexnet-small"
seeds = 1

[methods]
use = ["random", "random-v"]

[methods.random]
init_seed = 3

[methods."random-v"]     # the same settings as its base: still a method of its own
base = "random"

[tasks]
use = ["voc07-cls"]

[tasks.voc07-cls]
protocols = ["fc8"]
epochs = 1
batch_size = 16
test_crops = 1
"""


def suite_from(text: str, tmp_path: Path, name: str = "var.toml") -> Suite:
    path = tmp_path / name
    path.write_text(text)
    return load_suite(str(path))


def test_a_variant_overlays_its_base_section_and_chains_in_order(tmp_path):
    suite = suite_from("""
[methods]
use = ["b2"]
[methods.bigan]
steps = 10
generator_size = 32
[methods."bigan-112e"]
base = "bigan"
encoder_size = 112
steps = 5
[methods.b2]
base = "bigan-112e"
lr = 0.5
[tasks]
use = ["voc07-cls"]
""", tmp_path)
    one = suite.resolve_method("bigan-112e")
    assert (one.plugin, one.base) == ("bigan", "bigan")
    assert one.settings == {"steps": 5, "generator_size": 32, "encoder_size": 112}
    two = suite.resolve_method("b2")
    assert (two.plugin, two.base) == ("bigan", "bigan-112e")
    assert two.settings == {"steps": 5, "generator_size": 32, "encoder_size": 112, "lr": 0.5}
    plain = suite.resolve_method("bigan")
    assert (plain.plugin, plain.base) == ("bigan", None)
    assert plain.settings == {"steps": 10, "generator_size": 32}


@pytest.mark.parametrize("sections, expected", [
    ('[methods.a]\nbase = "b"\n[methods.b]\nbase = "a"\n',
     r"the bases of variant 'a' loop: a -> b -> a"),
    ('[methods.a]\nbase = "a"\n', r"the bases of variant 'a' loop: a -> a"),
    ('[methods.a]\nbase = 3\n', r"\[methods.\"a\"\] base must be a method name, got 3"),
])
def test_a_malformed_variant_is_refused_naming_the_suite_file(tmp_path, sections, expected):
    with pytest.raises(BenchharnessError, match=r"bad\.toml: " + expected):
        suite_from(f'[methods]\nuse = ["random"]\n{sections}[tasks]\nuse = ["voc07-cls"]\n',
                   tmp_path, "bad.toml")


@pytest.mark.parametrize("sections, expected", [
    ('[methods.v]\nbase = "nosuch"\n', r"variant 'v' has base 'nosuch', which is neither a registered "
                                       r"method \(.*random.*\) nor a variant of this suite \(v\)"),
    ('[methods.w]\nbase = "v"\n[methods.v]\nbase = "nosuch"\n', r"variant 'w' has base 'nosuch'"),
    ('[methods.random]\nbase = "bigan"\n', r"\[methods.\"random\"\] declares base = 'bigan', but "
                                           r"'random' is a registered method"),
])
def test_an_unknown_base_or_a_shadowing_name_is_refused_before_any_data(tmp_path, sections, expected):
    suite = suite_from(f'[methods]\nuse = ["random"]\n{sections}[tasks]\nuse = ["voc07-cls"]\n',
                       tmp_path, "bad.toml")
    # refused although the run selects only `random`, and before the (missing) data is looked at
    with pytest.raises(BenchharnessError, match=r"bad\.toml: " + expected):
        plan(suite, Registry(), tmp_path / "no-data")


def test_a_variant_has_a_cache_key_of_its_own_and_leaves_its_base_key_unchanged(tmp_path, tiny_world):
    registry = Registry()
    with_variant = suite_from(SUITE, tmp_path)
    without = suite_from(SUITE.replace('"random", "random-v"', '"random"')
                         .replace('[methods."random-v"]', "").replace('base = "random"', ""),
                         tmp_path, "plain.toml")
    jobs = {j.method: j for j in plan(with_variant, registry, tiny_world).jobs}
    assert sorted(jobs) == ["random", "random-v"]
    assert jobs["random-v"].representation_key != jobs["random"].representation_key
    assert jobs["random-v"].config_hash != jobs["random"].config_hash
    assert (jobs["random-v"].base, jobs["random-v"].registered_method) == ("random", "random")
    # declaring a variant changes nothing for its base: same key, same cached representation
    plain = plan(without, registry, tiny_world).jobs[0]
    assert plain.representation_key == jobs["random"].representation_key


def test_two_variants_run_as_two_rows_and_the_base_cache_is_not_reused(tmp_path, tiny_world, one_thread):
    registry = Registry()
    suite = suite_from(SUITE, tmp_path)
    results = tmp_path / "results"
    runner = Runner(registry, results, device="cpu", log=lambda m: None, progress=None)
    base_plan = plan(suite, registry, tiny_world, methods=["random"])
    assert runner.run(base_plan)["done"] == 1
    variant_plan = plan(suite, registry, tiny_world, methods=["random-v"])
    assert runner.run(variant_plan)["done"] == 1

    stored = [json.loads(p.read_text()) for p in (results / "runs").rglob("*.json")]
    by_method = {r["method"]: r for r in stored}
    assert sorted(by_method) == ["random", "random-v"]
    variant, base = by_method["random-v"], by_method["random"]
    assert variant["base"] == "random" and base["base"] is None
    assert variant["timing"]["pretrain_cached"] is False  # pretrained, not read from the base's entry
    assert variant["method_config"] == base["method_config"] == {"init_seed": 3}
    assert variant["representation_key"] != base["representation_key"]
    metas = {d.name: json.loads((d / "representation.json").read_text())["meta"]
             for d in (results / "cache" / "representations").glob("*/")
             if (d / "representation.json").is_file()}
    assert {(m["method"], m["base"], name) for name, m in metas.items()} == {
        ("random", None, f"random-{base['representation_key']}"),
        ("random-v", "random", f"random-v-{variant['representation_key']}")}
    # the same settings and seed: the same weights, hence the same number, in two rows
    rows = summarize(load_results(results))
    assert sorted(rows["method"]) == ["random", "random-v"]
    assert rows["mean"].iloc[0] == pytest.approx(rows["mean"].iloc[1])


def test_the_suites_declare_the_thesis_bigan_112e(tiny_world):
    for name in ("smoke", "voc-transfer"):
        suite = load_suite(name)
        base, variant = suite.resolve_method("bigan"), suite.resolve_method("bigan-112e")
        assert (variant.plugin, variant.base) == ("bigan", "bigan")
        changed = {k for k in variant.settings if variant.settings[k] != base.settings.get(k)}
        assert changed == {"encoder_size", "store_size"}, name  # only E's input grows
        assert variant.settings["encoder_size"] == 112
        assert variant.settings["generator_size"] < variant.settings["encoder_size"]
    # declared, selected by --method: smoke keeps make demo's time, voc-transfer's default run
    # needs no ImageNet pool
    for name in ("smoke", "voc-transfer"):
        assert "bigan-112e" not in load_suite(name).methods, name
    assert "bigan-112e" in load_suite("table53").methods


def test_method_selects_a_variant_on_the_command_line(tiny_world):
    out = CliRunner().invoke(main, ["run", "--suite", "smoke", "--method", "bigan-112e", "--task",
                                    "voc07-cls", "--data-root", str(tiny_world), "--dry-run"])
    assert out.exit_code == 0, out.output
    rows = [line.split("\t") for line in out.output.splitlines() if "\t" in line]
    assert {r[0] for r in rows} == {"bigan-112e"}
    assert {(r[2], r[3]) for r in rows} == {("fc8", "seed 0"), ("fc8", "seed 1"), ("fc6-8", "seed 0"),
                                           ("fc6-8", "seed 1"), ("all", "seed 0")}
