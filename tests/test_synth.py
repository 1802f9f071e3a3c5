"""The synthetic world: layout, consistency with the VOC readers, determinism, signal."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchharness.data.synthetic.world import (
    CLASS_STYLES,
    SIZES,
    generate_world,
    make_scene,
    world_is_complete,
)
from benchharness.data.voc.classes import IGNORE_LABEL, VOC_CLASSES, VOC_PALETTE
from benchharness.data.voc.devkit import VOCClassificationDataset, VOCDevkit, locate_devkit
from benchharness.interfaces import DataError

TINY = SIZES["tiny"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("world") / "w", seed=0, size="tiny")


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_layout_and_world_json(world: Path):
    assert world_is_complete(world)
    for sub in (
        "VOCdevkit/VOC2007/JPEGImages",
        "VOCdevkit/VOC2007/Annotations",
        "VOCdevkit/VOC2007/ImageSets/Main",
        "VOCdevkit/VOC2012/JPEGImages",
        "VOCdevkit/VOC2012/Annotations",
        "VOCdevkit/VOC2012/SegmentationClass",
        "VOCdevkit/VOC2012/ImageSets/Segmentation",
        "VOCdevkit/VOC2012/ImageSets/Main",
        "source/train",
        "source/val",
        "unlabelled",
    ):
        assert (world / sub).is_dir(), sub
    main = world / "VOCdevkit/VOC2007/ImageSets/Main"
    for split in ("train", "val", "trainval", "test"):
        assert (main / f"{split}.txt").is_file()
        for name in VOC_CLASSES:
            assert (main / f"{name}_{split}.txt").is_file()
    info = json.loads((world / "world.json").read_text())
    assert info["seed"] == 0 and info["size"] == "tiny"
    assert info["counts"]["voc2007"]["trainval"] == TINY.voc07_trainval
    assert info["counts"]["voc2007"]["test"] == TINY.voc07_test
    assert len(list((world / "unlabelled").glob("*.jpg"))) == TINY.unlabelled
    assert locate_devkit(world) == world / "VOCdevkit"


def test_voc2007_splits_match_files(world: Path):
    devkit = VOCDevkit(world / "VOCdevkit")
    train, val = devkit.read_split(2007, "train"), devkit.read_split(2007, "val")
    trainval, test = devkit.read_split(2007, "trainval"), devkit.read_split(2007, "test")
    assert not set(train) & set(val) and sorted(train + val) == trainval
    assert not set(trainval) & set(test)
    assert (len(trainval), len(test)) == (TINY.voc07_trainval, TINY.voc07_test)
    everything = set(trainval) | set(test)
    voc = devkit.year_dir(2007)
    assert {p.stem for p in (voc / "JPEGImages").glob("*.jpg")} == everything
    assert {p.stem for p in (voc / "Annotations").glob("*.xml")} == everything


def _labels_from_xml(devkit: VOCDevkit, year, image_ids) -> np.ndarray:
    labels = -np.ones((len(image_ids), len(VOC_CLASSES)), dtype=np.int8)
    for row, image_id in enumerate(image_ids):
        for obj in devkit.read_annotation(year, image_id).objects:
            column = VOC_CLASSES.index(obj.name)
            if not obj.difficult:
                labels[row, column] = 1
            elif labels[row, column] == -1:
                labels[row, column] = 0
    return labels


@pytest.mark.parametrize("year, splits", [(2007, ("train", "val", "trainval", "test")),
                                          (2012, ("train", "val", "trainval"))])
def test_class_labels_follow_xml_difficult_flags(world: Path, year, splits):
    devkit = VOCDevkit(world / "VOCdevkit")
    for split in splits:
        ids, labels = devkit.read_class_labels(year, split)
        assert ids == devkit.read_split(year, split)
        assert np.array_equal(labels, _labels_from_xml(devkit, year, ids))


def test_annotations_are_sane(world: Path):
    devkit = VOCDevkit(world / "VOCdevkit")
    ids = devkit.read_split(2007, "trainval") + devkit.read_split(2007, "test")
    low, high = SIZES["tiny"].scene_side
    objects = []
    for image_id in ids:
        annotation = devkit.read_annotation(2007, image_id)
        assert low <= annotation.width <= high and low <= annotation.height <= high
        assert 1 <= len(annotation.objects) <= 4
        with Image.open(devkit.image_path(2007, image_id)) as image:
            assert image.size == (annotation.width, annotation.height)
        for obj in annotation.objects:
            xmin, ymin, xmax, ymax = obj.bbox
            assert 1 <= xmin <= xmax <= annotation.width
            assert 1 <= ymin <= ymax <= annotation.height
            assert all(float(c).is_integer() for c in obj.bbox)
            objects.append(obj)
    assert any(obj.truncated for obj in objects)
    assert not all(obj.truncated for obj in objects)


def test_difficult_objects_occur():
    rng = np.random.default_rng(123)
    flags = [obj.difficult for _ in range(150) for obj in make_scene(rng).objects]
    assert 0 < sum(flags) < 0.3 * len(flags)


def test_segmentation_masks(world: Path):
    devkit = VOCDevkit(world / "VOCdevkit")
    train = devkit.read_split(2012, "train", task="Segmentation")
    val = devkit.read_split(2012, "val", task="Segmentation")
    assert (len(train), len(val)) == (TINY.voc12_train, TINY.voc12_val)
    assert not set(train) & set(val)
    seen_void = False
    for image_id in train + val:
        path = devkit.mask_path(2012, image_id)
        with Image.open(path) as image:
            assert image.mode == "P"
            assert image.getpalette()[:768] == VOC_PALETTE
        mask = devkit.read_mask(2012, image_id)
        rgb = devkit.load_image(2012, image_id)
        assert mask.shape == tuple(rgb.shape[1:])
        values = set(np.unique(mask).tolist())
        assert values <= set(range(21)) | {IGNORE_LABEL}
        annotation = devkit.read_annotation(2012, image_id)
        assert annotation.segmented
        named = {VOC_CLASSES.index(obj.name) + 1 for obj in annotation.objects}
        assert values - {0, IGNORE_LABEL} <= named
        seen_void |= IGNORE_LABEL in values
        # The void band separates objects from the background: no class pixel touches 0.
        cls = (mask > 0) & (mask != IGNORE_LABEL)
        assert not (cls[:, 1:] & (mask[:, :-1] == 0)).any()
        assert not (cls[1:, :] & (mask[:-1, :] == 0)).any()
    assert seen_void


def test_source_is_an_imagefolder(world: Path):
    from torchvision.datasets import ImageFolder

    train = ImageFolder(str(world / "source" / "train"))
    assert train.classes == list(VOC_CLASSES)
    assert len(train) == TINY.source_train_per_class * 20
    image, target = train[0]
    assert image.size == (64, 64) and target == 0
    val = ImageFolder(str(world / "source" / "val"))
    assert len(val) == TINY.source_val_per_class * 20


def test_classification_dataset_reads_world(world: Path):
    dataset = VOCClassificationDataset(world, 2007, "test")
    image, labels = dataset[3]
    assert image.shape[0] == 3 and labels.shape == (20,)
    assert (labels == 1).any()


def test_same_seed_same_bytes_other_seed_differs(world: Path, tmp_path: Path):
    again = generate_world(tmp_path / "again", seed=0, size="tiny")
    reference = _hashes(world)
    assert _hashes(again) == reference
    other = _hashes(generate_world(tmp_path / "other", seed=1, size="tiny"))
    assert other.keys() == reference.keys()
    images = [k for k in reference if k.endswith(".jpg")]
    differ = sum(other[k] != reference[k] for k in images)
    assert differ > 0.9 * len(images)


def test_interrupted_generation_leaves_no_marker(tmp_path: Path):
    out = tmp_path / "w"
    out.mkdir()
    (out / ".complete").write_bytes(b"")

    def failing_progress(iterable, desc=None, total=None):
        for number, item in enumerate(iterable):
            if desc == "VOC2012" and number == 3:
                raise KeyboardInterrupt
            yield item

    with pytest.raises(KeyboardInterrupt):
        generate_world(out, seed=0, size="tiny", progress=failing_progress)
    assert not world_is_complete(out)
    generate_world(out, seed=0, size="tiny")  # the half-made world is recognised and redone
    assert world_is_complete(out)


def test_refuses_to_overwrite_foreign_data(tmp_path: Path):
    real = tmp_path / "VOCdevkit" / "VOC2007"
    real.mkdir(parents=True)
    (real / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing"):
        generate_world(tmp_path, seed=0, size="tiny")
    assert (real / "precious.txt").read_text() == "keep me"


def test_class_styles_cover_the_classes():
    assert tuple(CLASS_STYLES) == VOC_CLASSES
    assert len({style.shape for style in CLASS_STYLES.values()}) >= 9
    looks = {(s.shape, s.hue, s.texture) for s in CLASS_STYLES.values()}
    assert len(looks) == 20


def _class_colour_features(seed: int, scenes: int):
    """Per (scene, class present) the mean and spread of that class's pixels' RGB."""
    rng = np.random.default_rng(seed)
    features, targets = [], []
    for _ in range(scenes):
        scene = make_scene(rng)
        pixels = scene.image.reshape(-1, 3).astype(np.float32) / 255.0
        flat = scene.mask.reshape(-1)
        for value in np.unique(flat):
            if value in (0, IGNORE_LABEL):
                continue
            chosen = pixels[flat == value]
            if len(chosen) < 30:
                continue
            features.append(np.concatenate([chosen.mean(0), chosen.std(0)]))
            targets.append(int(value) - 1)
    return np.array(features), np.array(targets)


def test_colour_alone_tells_classes_apart():
    """A nearest-centroid classifier on object colour statistics is far above chance (5%)."""
    train_x, train_y = _class_colour_features(1, 400)
    test_x, test_y = _class_colour_features(2, 200)
    assert set(train_y.tolist()) == set(range(20))
    centroids = np.stack([train_x[train_y == c].mean(0) for c in range(20)])
    mean_hue_gaps = np.linalg.norm(centroids[:, None, :3] - centroids[None, :, :3], axis=-1)
    assert (mean_hue_gaps + np.eye(20)).min() > 0.02  # every class has its own mean colour
    distances = np.linalg.norm(test_x[:, None, :] - centroids[None], axis=-1)
    accuracy = (distances.argmin(1) == test_y).mean()
    assert accuracy > 0.5, accuracy
