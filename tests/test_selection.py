"""Names are checked before anything runs: no world generated, no model built for a typo."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from benchharness.cli import main
from benchharness.interfaces import BenchharnessError
from benchharness.plugins import Registry
from benchharness.selection import select
from benchharness.suite import Suite, find_suite


@pytest.fixture
def generating_suite(tmp_path) -> tuple[Path, Path]:
    """The smoke suite with its default data root moved to a missing folder (``run`` would
    generate its world there; tiny, should a regression let it) and the world's path."""
    world = tmp_path / "world"
    text = find_suite("smoke").read_text()
    assert 'data_root = "data/synthetic-small"' in text and 'size = "small"' in text
    suite = tmp_path / "smoke.toml"
    text = text.replace('data_root = "data/synthetic-small"', f'data_root = "{world.as_posix()}"')
    suite.write_text(text.replace('size = "small"', 'size = "tiny"'))
    return suite, world


def run(suite: Path, tmp_path: Path, *args: str):
    return CliRunner().invoke(main, ["run", "--suite", str(suite), "--results", str(tmp_path / "r"),
                                     *args])


@pytest.mark.parametrize("args, expected", [
    (["--protocol", "fc9"], "protocol fc9: none of the selected tasks has it (voc07-cls has fc8, fc6-8, "
                            "all, probe-conv1"),
    (["--protocol", "fc9"], "; voc07-det has all, fc6-8; voc12-seg has all, fc6-8)"),
    (["--protocol", "fc8", "--protocol", "fc9"], "protocol fc9: none of the selected tasks has it"),
    (["--task", "voc07-det", "--protocol", "fc8"],
     "protocol fc8: none of the selected tasks has it (voc07-det has all, fc6-8)"),
    (["--method", "nosuch", "--dry-run"], "unknown method 'nosuch'; available: "),
    (["--method", "bigan-113e"], "variants declared in"),
    (["--task", "voc07-clss"], "unknown task 'voc07-clss'"),
    (["--method", "checkpoint:missing.safetensors", "--dry-run"], "checkpoint not found"),
])
def test_a_bad_name_stops_the_run_before_any_world_is_generated(generating_suite, tmp_path, args,
                                                                expected):
    suite, world = generating_suite
    out = run(suite, tmp_path, *args)
    assert out.exit_code == 2, out.output
    assert expected in out.output
    assert not world.exists() and not (tmp_path / "r").exists()


def test_a_broken_variant_stops_the_run_before_any_world_is_generated(generating_suite, tmp_path):
    suite, world = generating_suite
    suite.write_text(suite.read_text() + '\n[methods."bigan-x"]\nbase = "bigann"\n')
    out = run(suite, tmp_path, "--method", "random")
    assert out.exit_code == 2
    assert f"{suite}: variant 'bigan-x' has base 'bigann'" in out.output
    assert not world.exists()


def test_a_selection_that_leaves_no_job_is_an_error(tmp_path):
    raw = {"methods": {"use": []}, "tasks": {"use": ["voc07-cls"]}}
    registry = Registry()
    with pytest.raises(BenchharnessError, match=r"empty\.toml: the selection leaves no job to run "
                                                r"\(methods: none; tasks and protocols: voc07-cls: fc8, "
                                                r"fc6-8, all; seeds: 1\)"):
        select(Suite.from_dict(raw, Path("empty.toml")), registry)
    raw = {"methods": {"use": ["random"]}, "tasks": {"use": ["voc07-cls"]}, "seeds": 0}
    with pytest.raises(BenchharnessError, match="leaves no job"):
        select(Suite.from_dict(raw, Path("zero.toml")), registry)


def test_the_selection_narrows_the_suite_by_the_filters():
    raw = {"methods": {"use": ["random", "supervised"]},
           "tasks": {"use": ["voc07-cls", "voc07-det"], "voc07-det": {"protocols": ["all"]}}}
    suite, registry = Suite.from_dict(raw, Path("s.toml")), Registry()
    chosen = select(suite, registry, protocols=["fc6-8"])
    # a --protocol replaces the suite's lists for the tasks that have it, and drops the others' jobs
    assert chosen.protocols == {"voc07-cls": ["fc6-8"], "voc07-det": ["fc6-8"]}
    assert chosen.job_count(suite, 2) == 2 * 2 * 2
    chosen = select(suite, registry, methods=["random"], tasks=["voc07-det"])
    assert [c.spec for c in chosen.methods] == ["random"] and chosen.protocols == {"voc07-det": ["all"]}
