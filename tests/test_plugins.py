"""Plugin discovery: built-ins, entry points, a broken plugin, duplicate names, the CLI listing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from benchharness import hookimpl
from benchharness.interfaces import BenchharnessError, Method
from benchharness.plugins import Registry


def test_builtins_and_entry_points_are_loaded():
    reg = Registry()
    assert {"random", "supervised", "checkpoint"} <= set(reg.methods())
    assert "voc07-cls" in reg.tasks()
    assert {"voc07-11pt", "voc10-area", "sklearn-ap"} <= set(reg.evaluators())
    assert {"alexnet", "alexnet-small"} <= set(reg.backbones())
    # built-in methods come through the entry-point group, like any third-party plugin
    assert reg.sources["supervised"].startswith("entry point benchharness_plugins.supervised")
    assert reg.methods()["supervised"].group == "sup"
    assert reg.methods()["random"].group == "none"


def _fake_distribution(tmp_path, entries: dict[str, str], modules: dict[str, str]):
    dist = tmp_path / "thirdparty-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty\nVersion: 0.1\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
    (dist / "entry_points.txt").write_text(f"[benchharness]\n{lines}\n")
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))


GOOD = """
    from benchharness import hookimpl
    from benchharness.interfaces import Method

    @hookimpl
    def benchharness_methods():
        return [Method("dummy", "unsup", ("images",), lambda ctx: None, "a third-party method")]
"""
BROKEN = "import a_module_that_does_not_exist\n"


def test_broken_plugin_is_reported_and_others_still_load(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, {"goodplug": "goodmod", "brokenplug": "brokenmod"},
                       {"goodmod": GOOD, "brokenmod": BROKEN})
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry()
    assert "dummy" in reg.methods()
    assert "supervised" in reg.methods()
    [failure] = reg.failures
    assert failure.name == "brokenplug"
    assert "a_module_that_does_not_exist" in failure.error
    with pytest.raises(BenchharnessError, match="brokenplug"):
        reg.get("methods", "nonexistent")


def test_cli_plugins_json_lists_everything_and_the_failure(tmp_path):
    _fake_distribution(tmp_path, {"goodplug": "goodmod", "brokenplug": "brokenmod"},
                       {"goodmod": GOOD, "brokenmod": BROKEN})
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "benchharness.cli", "plugins", "--json"],
                         capture_output=True, text=True, env=env, check=True)
    info = json.loads(out.stdout)
    assert {"random", "supervised", "checkpoint", "dummy"} <= set(info["methods"])
    assert "voc07-cls" in info["tasks"]
    assert "voc07-11pt" in info["evaluators"]
    assert [f["name"] for f in info["failed"]] == ["brokenplug"]
    goodplug = next(p for p in info["plugins"] if p["name"] == "goodplug")
    assert goodplug["hooks"] == ["benchharness_methods"]
    assert goodplug["registers"] == {"methods": ["dummy"]}
    text = subprocess.run([sys.executable, "-m", "benchharness.cli", "plugins"],
                          capture_output=True, text=True, env=env, check=True).stdout
    assert "brokenplug  [FAILED to load brokenmod]" in text
    assert "ModuleNotFoundError" in text


class _Duplicate:
    @hookimpl
    def benchharness_methods(self):
        return [Method("random", "none", (), lambda ctx: None)]


def test_duplicate_method_names_are_an_error():
    reg = Registry()
    reg.register(_Duplicate(), name="dup")
    with pytest.raises(BenchharnessError, match="'random' is registered by both"):
        reg.methods()


def test_method_validates_its_group():
    with pytest.raises(ValueError, match="group"):
        Method("x", "semi", (), lambda ctx: None)
