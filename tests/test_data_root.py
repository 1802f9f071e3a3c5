"""A user's data root: the accepted layouts, never written into, and its identity (issue 13, item 6)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchharness.cli import main
from benchharness.data.voc.devkit import LAYOUTS, find_devkit, locate_devkit
from benchharness.data.voc.identity import identify, split_fingerprint
from benchharness.interfaces import DataError
from benchharness.runner import prepare_data_root
from benchharness.suite import load_suite


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a hash of its bytes (folders as 'dir')."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _layouts(tiny_world: Path, tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """The three layouts around the tiny world's VOC2007 (linked, not copied): name ->
    (data root, expected devkit)."""
    voc07 = tiny_world / "VOCdevkit" / "VOC2007"
    nested = tmp_path / "nested"
    (nested / "VOCdevkit").mkdir(parents=True)
    (nested / "VOCdevkit" / "VOC2007").symlink_to(voc07)
    devkit = tmp_path / "as-devkit" / "VOCdevkit"
    devkit.mkdir(parents=True)
    (devkit / "VOC2007").symlink_to(voc07)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "VOC2007").symlink_to(voc07)
    return {"DIR/VOCdevkit/VOCyyyy": (nested, nested / "VOCdevkit"),
            "DIR is VOCdevkit": (devkit, devkit),
            "DIR/VOCyyyy": (flat, flat)}


def test_the_three_layouts_are_found_and_named(tiny_world, tmp_path):
    layouts = _layouts(tiny_world, tmp_path)
    assert set(layouts) == set(LAYOUTS)
    for name, (root, devkit) in layouts.items():
        found = find_devkit(root)
        assert (found.devkit, found.layout, found.years) == (devkit, name, ("2007",))
        assert locate_devkit(root) == devkit
        [line] = found.describe(root)
        assert line.startswith(f"found VOC2007 at {devkit / 'VOC2007'} (layout: {name}")


def test_an_unknown_layout_says_what_was_expected(tmp_path):
    (tmp_path / "photos" / "VOC2007-copy").mkdir(parents=True)  # near miss: not a layout
    with pytest.raises(DataError) as info:
        find_devkit(tmp_path / "photos")
    message = str(info.value)
    assert message.startswith(str(tmp_path / "photos"))
    for text in LAYOUTS.values():
        assert text in message


def test_a_user_data_root_without_voc_is_an_error_and_stays_untouched(tmp_path):
    """The new user of issue 13: `run --suite smoke --data-root DIR`, DIR not holding VOC."""
    user = tmp_path / "my-photos"
    (user / "VOC").mkdir(parents=True)
    (user / "VOC" / "notes.txt").write_text("my data\n")
    (user / "holiday.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    before = _snapshot(user)
    out = CliRunner().invoke(main, ["run", "--suite", "smoke", "--data-root", str(user),
                                    "--results", str(tmp_path / "r"), "--dry-run"])
    assert out.exit_code == 2, out.output
    assert "error:" in out.output and "no VOCdevkit found" in out.output
    assert LAYOUTS["DIR/VOCyyyy"] in out.output
    assert _snapshot(user) == before  # nothing generated, nothing created
    assert not (tmp_path / "r").exists()

    empty = tmp_path / "empty"  # an empty folder is not filled with a synthetic world either
    empty.mkdir()
    out = CliRunner().invoke(main, ["run", "--suite", "smoke", "--data-root", str(empty), "--dry-run"])
    assert out.exit_code == 2 and list(empty.iterdir()) == []


def test_a_user_data_root_with_voc2007_at_its_top_is_used_as_it_is(tiny_world, tmp_path):
    root, _ = _layouts(tiny_world, tmp_path)["DIR/VOCyyyy"]
    before = _snapshot(root)
    out = CliRunner().invoke(main, ["run", "--suite", "smoke", "--data-root", str(root),
                                    "--method", "random", "--task", "voc07-cls", "--dry-run"])
    assert out.exit_code == 0, out.output  # VOC2007 is all classification needs
    assert f"found VOC2007 at {root / 'VOC2007'} (layout: DIR/VOCyyyy" in out.output
    assert "generating" not in out.output
    assert _snapshot(root) == before


def test_the_synthetic_world_is_generated_only_at_the_suite_default(tmp_path):
    default = tmp_path / "default-world"
    suite_file = tmp_path / "s.toml"
    suite_file.write_text(f'name = "s"\ndata_root = "{default.as_posix()}"\n[synthetic]\nseed = 1\n'
                          'size = "tiny"\n[methods]\nuse = ["random"]\n[tasks]\nuse = ["voc07-cls"]\n')
    suite = load_suite(str(suite_file))
    log = []
    assert prepare_data_root(suite, str(default), log.append) == default  # named explicitly: same place
    assert (default / ".complete").is_file()
    assert log[0].startswith(f"generating the synthetic world in {default}")
    assert any(line.startswith("found VOC2007") for line in log)
    # a folder of someone else's at the default place is not overwritten
    foreign = tmp_path / "foreign"
    (foreign / "mine").mkdir(parents=True)
    suite.data_root = str(foreign)
    with pytest.raises(DataError, match="no VOCdevkit found"):
        prepare_data_root(suite, None, log.append)
    assert [p.name for p in foreign.iterdir()] == ["mine"]


def test_data_identity_records_the_splits_and_changes_with_them(tiny_world, tmp_path):
    copy = tmp_path / "voc"
    shutil.copytree(tiny_world / "VOCdevkit", copy / "VOCdevkit")
    ident = identify(copy)
    assert ident.root == str(copy.resolve()) and ident.devkit == str((copy / "VOCdevkit").resolve())
    assert ident.layout == "DIR/VOCdevkit/VOCyyyy" and ident.synthetic is None
    assert ident.splits == split_fingerprint(copy / "VOCdevkit")
    record = ident.record()
    assert record["key"] == ident.key and record["tag"] == f"voc:{ident.key[:6]}"
    assert json.loads(json.dumps(record)) == record

    split = copy / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "aeroplane_test.txt"
    lines = split.read_text().splitlines()
    image_id, label = lines[0].split()
    lines[0] = f"{image_id} {'-1' if label != '-1' else ' 1'}"  # one label flipped
    split.write_text("\n".join(lines) + "\n")
    changed = identify(copy)
    assert changed.splits != ident.splits and changed.key != ident.key
    # the fingerprint is the split files' and nothing else: an image changed leaves it alone
    image = next((copy / "VOCdevkit" / "VOC2007" / "JPEGImages").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    assert identify(copy).splits == changed.splits
    # the same split files seen through another layout give the same fingerprint
    flat = tmp_path / "flat"
    flat.mkdir()
    for year in ("VOC2007", "VOC2012"):
        (flat / year).symlink_to(copy / "VOCdevkit" / year)
    assert identify(flat).splits == changed.splits


def test_a_synthetic_world_is_known_by_its_recipe_wherever_it_lies(tiny_world, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(tiny_world / "VOCdevkit", copy / "VOCdevkit")
    shutil.copy(tiny_world / "world.json", copy / "world.json")
    assert identify(copy).key == identify(tiny_world).key
    assert identify(copy).synthetic.startswith("synthetic:")
