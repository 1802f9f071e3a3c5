"""Ground truth of a VOC split, built with the devkit readers of :mod:`benchharness.data.voc.devkit`.

* :func:`cls_ground_truth`: ``ImageSets/Main/<class>_<split>.txt`` labels (1 / -1 / 0);
* :func:`det_ground_truth`: the objects of ``Annotations/<id>.xml`` for the ids of
  ``ImageSets/Main/<split>.txt`` (difficult flags kept, every box of every image);
* :func:`seg_ground_truth`: ``SegmentationClass/<id>.png`` for the ids of
  ``ImageSets/Segmentation/<split>.txt``, read lazily one mask at a time.

Every problem with the files raises :class:`~benchharness.interfaces.DataError` naming the file.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

from ..data.voc.classes import IGNORE_LABEL, VOC_CLASSES
from ..data.voc.devkit import VOCDevkit
from ..interfaces import ClsGroundTruth, DetGroundTruth, DetObject, SegGroundTruth

SEG_CLASSES: tuple[str, ...] = ("background",) + VOC_CLASSES
"""Segmentation class names: mask value ``k`` is ``SEG_CLASSES[k]``."""


def cls_ground_truth(devkit: VOCDevkit, year: str | int, split: str,
                     classes: Sequence[str] = VOC_CLASSES) -> ClsGroundTruth:
    """Per-image labels of ``classes`` for ``split`` (ids in ``<split>.txt`` order)."""
    image_ids, labels = devkit.read_class_labels(year, split, classes)
    return ClsGroundTruth(tuple(classes), image_ids, labels)


def det_ground_truth(devkit: VOCDevkit, year: str | int, split: str,
                     classes: Sequence[str] = VOC_CLASSES, iou_strict: bool = False) -> DetGroundTruth:
    """Boxes of ``classes`` in every image of ``ImageSets/Main/<split>.txt``.

    Objects of other classes are dropped; images without any object of ``classes`` keep an
    empty list (their detections are false positives).
    """
    wanted = set(classes)
    image_ids = devkit.read_split(year, split)
    objects: dict[str, list[DetObject]] = {}
    for image_id in image_ids:
        annotation = devkit.read_annotation(year, image_id)
        objects[image_id] = [DetObject(o.name, tuple(o.bbox), bool(o.difficult))
                             for o in annotation.objects if o.name in wanted]
    return DetGroundTruth(tuple(classes), image_ids, objects, iou_strict=iou_strict)


def seg_ground_truth(devkit: VOCDevkit, year: str | int, split: str,
                     class_names: Sequence[str] = SEG_CLASSES) -> SegGroundTruth:
    """Masks of ``ImageSets/Segmentation/<split>.txt``, read on demand."""
    image_ids = devkit.read_split(year, split, "Segmentation")
    return SegGroundTruth(tuple(class_names), image_ids, partial(devkit.read_mask, str(year)),
                          ignore_label=IGNORE_LABEL)
