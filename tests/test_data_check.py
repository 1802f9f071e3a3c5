"""`benchharness data check`: a copy of the tiny world, broken in one way per kind of problem.

Each break touches a different image so that the problems do not mask each other; the test
asserts that every break is reported against its file (and line, where there is one) and that
nothing else is.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchharness.data.voc.check import Problem, check_devkit, ensure_devkit, format_problems
from benchharness.data.voc.classes import VOC_PALETTE
from benchharness.data.voc.devkit import VOCDevkit
from benchharness.interfaces import DataError


@pytest.fixture
def world(tiny_world: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny world's VOCdevkit, free to break."""
    shutil.copytree(tiny_world / "VOCdevkit", tmp_path / "VOCdevkit")
    return tmp_path


def _line_of(path: Path, needle: str, occurrence: int = 0) -> int:
    """1-based line of the ``occurrence``-th line containing ``needle``."""
    hits = [n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    return hits[occurrence]


def _set_tag(xml: str, tag: str, value: str, occurrence: int = 0) -> str:
    matches = list(re.finditer(rf"<{tag}>[^<]*</{tag}>", xml))
    m = matches[occurrence]
    return xml[:m.start()] + f"<{tag}>{value}</{tag}>" + xml[m.end():]


def _find(problems: list[Problem], path: Path, words: str) -> Problem:
    found = [p for p in problems if p.path == path and words in p.message]
    assert found, f"no problem with {path} mentioning {words!r}; got:\n{format_problems(problems)}"
    return found[0]


def test_clean_world_has_no_problems(tiny_world):
    assert check_devkit(tiny_world) == []
    assert check_devkit(tiny_world, quick=True) == []
    assert ensure_devkit(tiny_world) == tiny_world / "VOCdevkit"


def test_every_problem_is_reported_with_its_file(world):
    devkit = VOCDevkit(world / "VOCdevkit")
    voc07 = world / "VOCdevkit" / "VOC2007"
    main = voc07 / "ImageSets" / "Main"
    trainval = devkit.read_split("2007", "trainval")
    test_ids = devkit.read_split("2007", "test")
    seg_ids = devkit.read_split("2012", "train", task="Segmentation")
    ids = iter(trainval)
    expected: list[tuple[Path, int | None, str, bool]] = []  # path, line, words, quick finds it

    # 1. truncated JPEG (only the last 200 bytes lost) and 2. bytes that are not an image
    truncated = devkit.image_path("2007", next(ids))
    truncated.write_bytes(truncated.read_bytes()[:-200])
    expected.append((truncated, None, "truncated", False))
    garbage = devkit.image_path("2007", next(ids))
    garbage.write_bytes(b"this is not a JPEG" * 20)
    expected.append((garbage, None, "cannot decode", False))
    # 2b. a JPEG missing only its end-of-image marker
    no_eoi = devkit.image_path("2007", next(ids))
    no_eoi.write_bytes(no_eoi.read_bytes()[:-2])
    expected.append((no_eoi, None, "truncated", False))

    # 3. malformed XML: a bare '&' on line 3
    malformed = devkit.annotation_path("2007", next(ids))
    lines = malformed.read_text().splitlines()
    lines[2] = "<filename>a & b</filename>"
    malformed.write_text("\n".join(lines) + "\n")
    expected.append((malformed, 3, "malformed XML", True))

    # 4. a box outside the image (xmax = width + 1) on the first object
    outside = devkit.annotation_path("2007", next(ids))
    width = devkit.read_annotation("2007", outside.stem).width
    outside.write_text(_set_tag(outside.read_text(), "xmax", str(width + 1)))
    expected.append((outside, _line_of(outside, "<object>"), "outside", True))

    # 5. an inverted box (ymin > ymax) on the first object
    inverted = devkit.annotation_path("2007", next(ids))
    box = devkit.read_annotation("2007", inverted.stem).objects[0].bbox
    xml = _set_tag(inverted.read_text(), "ymin", str(int(box[3])))
    inverted.write_text(_set_tag(xml, "ymax", str(int(box[1]))))
    if box[1] != box[3]:
        expected.append((inverted, _line_of(inverted, "<object>"), "inverted", True))

    # 6. an unknown class name: a second, valid object named 'dragon'
    unknown = devkit.annotation_path("2007", next(ids))
    dragon = ("<object><name>dragon</name><difficult>0</difficult><bndbox><xmin>1</xmin>"
              "<ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>\n")
    unknown.write_text(unknown.read_text().replace("</annotation>", dragon + "</annotation>"))
    expected.append((unknown, _line_of(unknown, "dragon"), "unknown class name 'dragon'", True))

    # 7. split files naming a missing image and a missing annotation (test split)
    missing_image = devkit.image_path("2007", test_ids[0])
    missing_image.unlink()
    expected.append((main / "test.txt", 1, f"image {missing_image} is missing", True))
    missing_xml = devkit.annotation_path("2007", test_ids[1])
    missing_xml.unlink()
    expected.append((main / "test.txt", 2, f"annotation {missing_xml} is missing", True))

    # 8. a duplicate id in a split file
    test_split = main / "test.txt"
    test_split.write_text(test_split.read_text() + f"{test_ids[2]}\n")
    expected.append((test_split, len(test_ids) + 1, "listed twice", True))
    # per-class files still label it once: only the test split's own line is at fault

    # 9. per-class files inconsistent with the split
    dog = main / "dog_trainval.txt"
    dog_lines = dog.read_text().splitlines()
    dropped = dog_lines.pop(3).split()[0]
    dog_lines.append("999999 -1")
    dog_lines.append(f"{trainval[-1]} maybe")
    dog.write_text("\n".join(dog_lines) + "\n")
    expected.append((dog, None, f"have no label here (e.g. {dropped})", True))
    expected.append((dog, len(dog_lines) - 1, "'999999' is not in trainval.txt", True))
    expected.append((dog, len(dog_lines), "expected '<image id> <1|-1|0>'", True))
    (main / "dragon_trainval.txt").write_text(f"{trainval[0]}  1\n")
    expected.append((main / "dragon_trainval.txt", None, "unknown class name 'dragon'", True))
    (main / "cat_test.txt").unlink()
    expected.append((main / "cat_test.txt", None, "file is missing", True))

    # 10. a label that disagrees with the annotation (full mode only)
    flip_id = next(ids)
    names = {o.name for o in devkit.read_annotation("2007", flip_id).objects if not o.difficult}
    flipped_class = sorted(names)[0]
    flip = main / f"{flipped_class}_trainval.txt"
    text = flip.read_text()
    flip.write_text(re.sub(rf"^{flip_id}\s+1$", f"{flip_id} -1", text, flags=re.M))
    expected.append((flip, _line_of(flip, flip_id), f"'{flip_id}' is labelled -1", False))

    # 11. masks: a label outside 0-20/255, and the wrong size
    bad_label = devkit.mask_path("2012", seg_ids[0])
    mask = np.array(Image.open(bad_label))
    mask[0, 0] = 42
    image = Image.fromarray(mask, mode="P")
    image.putpalette(VOC_PALETTE)
    image.save(bad_label)
    expected.append((bad_label, None, "mask has labels 42", False))
    bad_size = devkit.mask_path("2012", seg_ids[1])
    small = Image.open(bad_size).crop((0, 0, 10, 12))
    small.save(bad_size)
    expected.append((bad_size, None, "mask is 10x12", False))
    missing_mask = devkit.mask_path("2012", seg_ids[2])
    missing_mask.unlink()
    seg_split = world / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt"
    expected.append((seg_split, 3, f"mask {missing_mask} is missing", True))
    seg_trainval = seg_split.with_name("trainval.txt")  # lists the same image
    expected.append((seg_trainval, _line_of(seg_trainval, seg_ids[2]),
                     f"mask {missing_mask} is missing", True))

    full = check_devkit(world)
    quick = check_devkit(world, quick=True)
    for path, line, words, in_quick in expected:
        assert _find(full, path, words).line == line, (path, words)
        if in_quick:
            assert _find(quick, path, words).line == line
        else:
            assert not [p for p in quick if p.path == path and words in p.message]
    # Nothing beyond the breaks is reported.
    touched = {path for path, *_ in expected}
    assert {p.path for p in full} == touched
    assert {p.path for p in quick} == {path for path, _, _, q in expected if q}

    with pytest.raises(DataError) as raised:
        ensure_devkit(world, limit=3)
    message = str(raised.value)
    assert f"{len(quick)} problem(s) found" in message
    assert f"... and {len(quick) - 3} more" in message


def test_problem_str_names_file_and_line(tmp_path):
    path = tmp_path / "a.txt"
    assert str(Problem(path, 7, "bad")) == f"{path}:7: bad"
    assert str(Problem(path, None, "bad")) == f"{path}: bad"


def test_missing_year_and_missing_folder(world):
    shutil.rmtree(world / "VOCdevkit" / "VOC2012")
    shutil.rmtree(world / "VOCdevkit" / "VOC2007" / "Annotations")
    problems = check_devkit(world, years=("2007", "2012"), quick=True)
    paths = {p.path: p.message for p in problems}
    assert "VOC2012 is missing" in paths[world / "VOCdevkit" / "VOC2012"]
    assert paths[world / "VOCdevkit" / "VOC2007" / "Annotations"] == "folder is missing"
    # The missing folder is reported once, not once per image.
    assert len(problems) == 2
    # Without explicit years only the present ones are checked.
    assert len(check_devkit(world, quick=True)) == 1


def test_no_devkit_at_all_raises(tmp_path):
    with pytest.raises(DataError, match="no VOCdevkit found"):
        check_devkit(tmp_path)


def test_jpeg_without_end_marker_is_caught_whatever_the_decoder(tiny_world, tmp_path,
                                                                 monkeypatch):
    """The EOI check stands on its own: even a decoder that accepted the file is overruled."""
    import torch

    from benchharness.data.voc import check

    monkeypatch.setattr(check, "load_image", lambda path: torch.zeros(3, 5, 7, dtype=torch.uint8))
    source = next((tiny_world / "VOCdevkit" / "VOC2007" / "JPEGImages").glob("*.jpg")).read_bytes()
    cut, padded = tmp_path / "cut.jpg", tmp_path / "padded.jpg"
    cut.write_bytes(source[:-1])
    padded.write_bytes(source + b"\0" * 16)  # trailing bytes after the EOI are harmless
    problems, size = check._check_image(cut)
    assert size == (5, 7) and len(problems) == 1
    assert problems[0].path == cut and "no end-of-image marker" in problems[0].message
    assert check._check_image(padded) == ([], (5, 7))
