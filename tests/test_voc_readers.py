"""The VOCdevkit readers, on a small devkit written by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchharness.data.voc.classes import IGNORE_LABEL, VOC_CLASSES, VOC_PALETTE
from benchharness.data.voc.devkit import (
    Annotation,
    VOCClassificationDataset,
    VOCDevkit,
    VOCObject,
    load_image,
    locate_devkit,
)
from benchharness.interfaces import BenchharnessError, DataError

XML_TWO_OBJECTS = """<annotation>
  <folder>VOC2007</folder>
  <filename>000005.jpg</filename>
  <size><width>40</width><height>30</height><depth>3</depth></size>
  <segmented>1</segmented>
  <object>
    <name>chair</name><pose>Rear</pose><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>3</xmin><ymin>4</ymin><xmax>20</xmax><ymax>25</ymax></bndbox>
  </object>
  <object>
    <name>person</name><pose>Left</pose><truncated>1</truncated>
    <bndbox><xmin>10.5</xmin><ymin>1</ymin><xmax>40</xmax><ymax>30</ymax></bndbox>
  </object>
</annotation>
"""

XML_ONE_DIFFICULT = """<annotation>
  <size><width>40</width><height>30</height><depth>3</depth></size>
  <object>
    <name>dog</name><truncated>0</truncated><difficult>1</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>
  </object>
</annotation>
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def devkit_root(tmp_path: Path) -> Path:
    """A VOC2007 devkit with three images (train: 000005 000007, val: 000009)."""
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    main = voc / "ImageSets" / "Main"
    _write(main / "train.txt", "000005\n000007\n")
    _write(main / "val.txt", "000009\n")
    labels = {"000005": {"chair": 1, "person": 1}, "000007": {"dog": 0}, "000009": {"cat": 1}}
    for split, ids in (("train", ["000007", "000005"]), ("val", ["000009"])):
        for name in VOC_CLASSES:
            # Written in another order than the split file, with VOC's two-space format.
            lines = [f"{i} {labels[i].get(name, -1):2d}" for i in ids]
            _write(main / f"{name}_{split}.txt", "\n".join(lines) + "\n")
    _write(voc / "ImageSets" / "Segmentation" / "train.txt", "000005\n")
    _write(voc / "Annotations" / "000005.xml", XML_TWO_OBJECTS)
    _write(voc / "Annotations" / "000007.xml", XML_ONE_DIFFICULT)
    (voc / "JPEGImages").mkdir(parents=True)
    for image_id, colour in (("000005", (200, 30, 30)), ("000007", (30, 200, 30)),
                             ("000009", (30, 30, 200))):
        Image.new("RGB", (40, 30), colour).save(voc / "JPEGImages" / f"{image_id}.jpg",
                                                quality=95)
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[4:25, 3:20] = 9
    mask[:, 30:] = 15
    mask[:, 29] = IGNORE_LABEL
    image = Image.fromarray(mask, mode="L").convert("P")
    image.putpalette(VOC_PALETTE)
    (voc / "SegmentationClass").mkdir(parents=True)
    image.save(voc / "SegmentationClass" / "000005.png")
    return tmp_path


def test_locate_devkit_accepts_parent_or_devkit(devkit_root: Path):
    assert locate_devkit(devkit_root) == devkit_root / "VOCdevkit"
    assert locate_devkit(devkit_root / "VOCdevkit") == devkit_root / "VOCdevkit"
    assert locate_devkit(str(devkit_root)) == devkit_root / "VOCdevkit"


def test_locate_devkit_explains_how_to_get_data(tmp_path: Path):
    with pytest.raises(DataError) as info:
        locate_devkit(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "VOCdevkit/VOC2007" in message
    assert "benchharness data synth --out DIR" in message
    assert "host.robots.ox.ac.uk" in message
    assert isinstance(info.value, BenchharnessError)


def test_year_dir(devkit_root: Path):
    devkit = VOCDevkit(devkit_root / "VOCdevkit")
    assert devkit.year_dir(2007) == devkit_root / "VOCdevkit" / "VOC2007"
    with pytest.raises(DataError, match="VOC2012"):
        devkit.year_dir("2012")


def test_read_split(devkit_root: Path):
    devkit = VOCDevkit(devkit_root / "VOCdevkit")
    assert devkit.read_split("2007", "train") == ["000005", "000007"]
    assert devkit.read_split("2007", "train", task="Segmentation") == ["000005"]
    with pytest.raises(DataError, match="test.txt"):
        devkit.read_split("2007", "test")
    _write(devkit.split_path("2007", "empty"), "\n\n")
    with pytest.raises(DataError, match="empty.txt: split file is empty"):
        devkit.read_split("2007", "empty")


def test_read_class_labels(devkit_root: Path):
    devkit = VOCDevkit(devkit_root / "VOCdevkit")
    ids, labels = devkit.read_class_labels("2007", "train")
    assert ids == ["000005", "000007"]
    assert labels.dtype == np.int8 and labels.shape == (2, 20)
    chair, person, dog = (VOC_CLASSES.index(n) for n in ("chair", "person", "dog"))
    assert labels[0, chair] == 1 and labels[0, person] == 1 and labels[0, dog] == -1
    assert labels[1, dog] == 0
    assert (labels[1, np.arange(20) != dog] == -1).all()
    ids, labels = devkit.read_class_labels("2007", "train", classes=("dog", "chair"))
    assert labels.tolist() == [[-1, 1], [0, -1]]


def test_read_class_labels_bad_line_names_file_and_line(devkit_root: Path):
    devkit = VOCDevkit(devkit_root / "VOCdevkit")
    path = devkit.year_dir(2007) / "ImageSets" / "Main" / "cow_train.txt"
    _write(path, "000005 -1\n000007 maybe\n")
    with pytest.raises(DataError) as info:
        devkit.read_class_labels("2007", "train")
    assert info.value.path == path
    assert "line 2" in str(info.value)


def test_read_class_labels_unknown_id(devkit_root: Path):
    devkit = VOCDevkit(devkit_root / "VOCdevkit")
    path = devkit.year_dir(2007) / "ImageSets" / "Main" / "cow_train.txt"
    _write(path, "000005 -1\n000007 -1\n000099 1\n")
    with pytest.raises(DataError, match="000099") as info:
        devkit.read_class_labels("2007", "train")
    assert info.value.path == path


def test_read_class_labels_missing_class_file(devkit_root: Path):
    devkit = VOCDevkit(devkit_root / "VOCdevkit")
    path = devkit.year_dir(2007) / "ImageSets" / "Main" / "sofa_train.txt"
    path.unlink()
    with pytest.raises(DataError, match="sofa_train.txt"):
        devkit.read_class_labels("2007", "train")


def test_read_annotation(devkit_root: Path):
    devkit = VOCDevkit(devkit_root / "VOCdevkit")
    annotation = devkit.read_annotation("2007", "000005")
    assert isinstance(annotation, Annotation)
    assert (annotation.image_id, annotation.width, annotation.height) == ("000005", 40, 30)
    assert annotation.depth == 3 and annotation.segmented
    assert annotation.objects == [
        VOCObject("chair", (3.0, 4.0, 20.0, 25.0), difficult=False, truncated=False, pose="Rear"),
        VOCObject("person", (10.5, 1.0, 40.0, 30.0), difficult=False, truncated=True,
                  pose="Left"),
    ]
    other = devkit.read_annotation("2007", "000007")
    assert other.objects[0].difficult and other.objects[0].pose == "Unspecified"
    assert not other.segmented


def test_read_annotation_errors(devkit_root: Path):
    devkit = VOCDevkit(devkit_root / "VOCdevkit")
    path = devkit.annotation_path("2007", "000005")
    _write(path, "<annotation><size><width>4</width></size><object>")
    with pytest.raises(DataError, match="malformed XML") as info:
        devkit.read_annotation("2007", "000005")
    assert info.value.path == path
    _write(path, XML_TWO_OBJECTS.replace("<xmin>3</xmin>", "<xmin>three</xmin>"))
    with pytest.raises(DataError, match="xmin"):
        devkit.read_annotation("2007", "000005")
    with pytest.raises(DataError, match="000009.xml"):
        devkit.read_annotation("2007", "000009")


def test_load_image(devkit_root: Path):
    devkit = VOCDevkit(devkit_root / "VOCdevkit")
    image = load_image(devkit.image_path("2007", "000005"))
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 40)
    assert image[0].float().mean() > 150 and image[1].float().mean() < 80
    # Greyscale and palette files come back as three channels too.
    grey = devkit_root / "grey.png"
    Image.new("L", (7, 5), 99).save(grey)
    assert load_image(grey).shape == (3, 5, 7)


def test_load_image_errors(devkit_root: Path):
    devkit = VOCDevkit(devkit_root / "VOCdevkit")
    missing = devkit.image_path("2007", "000123")
    with pytest.raises(DataError, match="missing") as info:
        load_image(missing)
    assert info.value.path == missing
    path = devkit.image_path("2007", "000005")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        load_image(path)
    assert info.value.path == path
    path.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="decode"):
        load_image(path)


def test_read_mask(devkit_root: Path):
    devkit = VOCDevkit(devkit_root / "VOCdevkit")
    assert devkit.mask_path("2007", "000005").name == "000005.png"
    mask = devkit.read_mask("2007", "000005")
    assert mask.dtype == np.uint8 and mask.shape == (30, 40)
    assert set(np.unique(mask).tolist()) == {0, 9, 15, 255}
    assert mask[10, 10] == 9 and mask[0, 35] == 15 and mask[0, 29] == 255
    # L-mode masks are accepted; RGB ones are not.
    path = devkit.mask_path("2007", "000005")
    Image.fromarray(mask, mode="L").save(path)
    assert np.array_equal(devkit.read_mask("2007", "000005"), mask)
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(DataError, match="palette"):
        devkit.read_mask("2007", "000005")
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError) as info:
        devkit.read_mask("2007", "000005")
    assert info.value.path == path
    with pytest.raises(DataError, match="missing"):
        devkit.read_mask("2007", "000007")


def test_classification_dataset(devkit_root: Path):
    dataset = VOCClassificationDataset(devkit_root, "2007", "train")
    assert len(dataset) == 2 and dataset.image_ids == ["000005", "000007"]
    image, labels = dataset[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.uint8
    assert labels.dtype == torch.int8 and labels.shape == (20,)
    assert labels[VOC_CLASSES.index("person")] == 1
    assert np.array_equal(dataset.labels[1], labels.new_tensor(dataset.labels[1]).numpy())
    devkit = VOCDevkit(locate_devkit(devkit_root))
    transformed = VOCClassificationDataset(devkit, 2007, "val", transform=lambda x: x.float())
    image, labels = transformed[0]
    assert image.dtype == torch.float32 and labels[VOC_CLASSES.index("cat")] == 1
