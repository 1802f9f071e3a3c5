"""The objects that plugins register and that flow between methods, tasks and evaluators.

A method plugin returns :class:`Method` objects, a task plugin :class:`Task` objects, an
evaluator plugin :class:`Evaluator` objects. They meet only through the
:class:`~benchharness.representation.Representation` (method -> task) and through
:class:`Predictions` / ground truth (task -> evaluator).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .representation import Representation

GROUPS = ("sup", "self-sup", "unsup", "none")
"""Supervision groups, in the order the leaderboard shows them."""

DATA_KINDS = ("images", "labels", "video", "audio")
"""What a method may need from the data: still images, their labels, video clips, audio."""


class BenchharnessError(Exception):
    """An error the user can act on; the CLI prints its message without a traceback."""


class DataError(BenchharnessError):
    """Bad or missing input data. The message always names the file and the problem."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass
class RunContext:
    """Everything a method's ``pretrain`` or a task's ``transfer`` may use.

    ``config`` is the resolved configuration of the method (for ``pretrain``) or of the task
    (for ``transfer``) from the suite file. ``progress(iterable, desc=..., total=...)`` wraps an
    iterable in a progress bar. ``method_arg`` is the text after ``:`` in a method spec such as
    ``checkpoint:weights.safetensors``.
    """

    device: "torch.device"
    seed: int
    data_root: Path
    cache_dir: Path
    backbone: str
    config: Mapping[str, Any] = field(default_factory=dict)
    method_arg: str | None = None
    progress: Callable[..., Any] | None = None
    log: Callable[[str], None] = print
    backbone_factory: Callable[..., Any] | None = None
    state_dir: Path | None = None

    def epoch_checkpoint(self):
        """Where a training loop saves its state every epoch so that a killed run resumes
        (a :class:`benchharness.training.EpochCheckpoint`; a no-op when ``state_dir`` is None)."""
        from .training import EpochCheckpoint
        return EpochCheckpoint(self.state_dir)

    def build_backbone(self, in_channels: int = 3):
        """A fresh, randomly initialised trunk of this run's backbone."""
        if self.backbone_factory is None:
            from .backbones import build
            return build(self.backbone, in_channels=in_channels)
        return self.backbone_factory(in_channels=in_channels)

    def bar(self, iterable, **kwargs):
        """Wrap ``iterable`` in this run's progress reporter (or return it unchanged)."""
        if self.progress is None:
            return iterable
        return self.progress(iterable, **kwargs)


@dataclass(frozen=True)
class Method:
    """A pretraining method: how to obtain a Representation.

    ``pretrain(ctx)`` returns a :class:`~benchharness.representation.Representation` whose
    backbone is ``ctx.backbone``. ``group`` is one of :data:`GROUPS`; ``needs`` lists items of
    :data:`DATA_KINDS`. ``takes_argument`` is true for methods used as ``name:ARG``.
    ``argument_files(arg, config)``, when given, names every file besides ARG itself whose bytes
    decide the representation (a checkpoint's prototxt, its mean file), so that editing one
    makes a new cache key.
    """

    name: str
    group: str
    needs: tuple[str, ...]
    pretrain: Callable[[RunContext], "Representation"]
    description: str = ""
    takes_argument: bool = False
    argument_files: Callable[[str, dict], list[Path]] | None = None

    def __post_init__(self):
        if self.group not in GROUPS:
            raise ValueError(f"method {self.name!r}: group {self.group!r} is not one of {GROUPS}")
        unknown = set(self.needs) - set(DATA_KINDS)
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown data kinds {sorted(unknown)}")


@dataclass
class TransferOutput:
    """What a task's transfer returns: predictions, their ground truth, and side facts.

    ``metric`` is the evaluator id that gives the headline number; ``extra_metrics`` are other
    evaluator ids the runner also computes and stores under ``per_metric``. ``timing`` holds
    seconds spent (``transfer`` at least); ``info`` anything worth recording in the result.
    """

    predictions: "Predictions"
    ground_truth: Any
    metric: str
    extra_metrics: tuple[str, ...] = ()
    timing: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """A transfer task: fit a Representation to a target dataset and predict on its test split.

    ``transfer(representation, protocol, ctx)`` returns a :class:`TransferOutput`.
    ``protocols`` names what may be passed; ``datasets`` names what it reads (for messages);
    ``default_protocols`` those a suite runs when its ``[tasks.NAME]`` lists none (all of
    ``protocols`` when empty: a task's optional protocols, k-NN and probes, are asked for by name).
    """

    name: str
    protocols: tuple[str, ...]
    datasets: tuple[str, ...]
    transfer: Callable[["Representation", str, RunContext], TransferOutput]
    description: str = ""
    default_protocols: tuple[str, ...] = ()

    def protocols_by_default(self) -> list[str]:
        """The protocols a suite that names none runs."""
        return list(self.default_protocols or self.protocols)


@dataclass
class ClassDetections:
    """One class's detections over a split, as columns: the form the evaluators compute on.

    Row ``k`` is one detection: ``image_index[k]`` is the position of its image in
    :attr:`Predictions.image_ids`, ``scores[k]`` its score and ``boxes[k]`` its
    ``(xmin, ymin, xmax, ymax)`` box in VOC pixels (1-based, both ends inclusive). Row order is
    the order in which tied scores are ranked. Tasks build this directly from their tensors;
    wherever it is accepted, a list of ``(image_id, score, xmin, ymin, xmax, ymax)`` tuples is
    accepted too.
    """

    image_index: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    def __post_init__(self):
        self.image_index = np.asarray(self.image_index, dtype=np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        if not len(self.image_index) == len(self.scores) == len(self.boxes):
            raise ValueError(f"detection columns differ in length: {len(self.image_index)} image "
                             f"indices, {len(self.scores)} scores, {len(self.boxes)} boxes")

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def from_tuples(cls, detections: Sequence[tuple], index_of: Mapping[str, int],
                    class_name: str = "") -> "ClassDetections":
        """Columns of ``(image_id, score, x1, y1, x2, y2)`` tuples; ``index_of`` maps each known
        image id to its index. A malformed tuple or an unknown image id is a ValueError."""
        n = len(detections)
        if not all(len(d) == 6 for d in detections):
            bad = next(d for d in detections if len(d) != 6)
            raise ValueError(f"class {class_name!r}: a detection must be "
                             f"(image_id, score, x1, y1, x2, y2), got {bad!r}")
        try:  # C-level iteration: this is the only per-detection work done in Python
            index = np.fromiter(map(index_of.__getitem__, map(itemgetter(0), detections)),
                                dtype=np.int64, count=n)
        except (KeyError, TypeError):
            unknown = next(d[0] for d in detections if d[0] not in index_of)
            raise ValueError(f"class {class_name!r}: unrecognized image {unknown!r}: "
                             "not in the ground truth") from None
        column = [np.fromiter(map(itemgetter(k), detections), dtype=np.float64, count=n)
                  for k in range(1, 6)]
        return cls(index, column[0], np.stack(column[1:], axis=1))

    def tuples(self, image_ids: Sequence[str]) -> list[tuple]:
        """The detections as ``(image_id, score, x1, y1, x2, y2)`` tuples, in row order."""
        return [(image_ids[i], s, *box) for i, s, box in
                zip(self.image_index.tolist(), self.scores.tolist(), self.boxes.tolist())]


@dataclass
class Predictions:
    """Predictions for one split.

    ``kind`` is ``cls`` (``scores``: array [N images, C classes], multi-label), ``label``
    (``scores`` as ``cls``, for single-label classification: one true class per image, scored
    by top-k accuracy), ``det`` (``detections``: per class a :class:`ClassDetections` or a list
    of ``(image_id, score, xmin, ymin, xmax, ymax)`` tuples, 1-based inclusive pixel boxes) or
    ``seg`` (``masks``: image id -> uint8 array of class indices).
    """

    kind: str
    class_names: Sequence[str]
    image_ids: Sequence[str]
    scores: np.ndarray | None = None
    detections: dict[str, "ClassDetections | list[tuple]"] | None = None
    masks: dict[str, np.ndarray] | None = None

    def detection_tuples(self, class_name: str) -> list[tuple]:
        """One class's detections as ``(image_id, score, x1, y1, x2, y2)`` tuples (an empty list
        when the class has none)."""
        found = (self.detections or {}).get(class_name, [])
        if isinstance(found, ClassDetections):
            return found.tuples(self.image_ids)
        return list(found)


@dataclass
class ClsGroundTruth:
    """Per-image, per-class labels as in the VOC devkit: 1 positive, -1 negative, 0 difficult."""

    class_names: Sequence[str]
    image_ids: Sequence[str]
    labels: np.ndarray  # int8 [N, C]


@dataclass
class LabelGroundTruth:
    """Single-label ground truth (ImageNet's): ``targets[i]`` is the index in ``class_names``
    of image ``image_ids[i]``'s one class."""

    class_names: Sequence[str]
    image_ids: Sequence[str]
    targets: np.ndarray  # int64 [N]


@dataclass(frozen=True)
class DetObject:
    """One ground-truth object of a detection split.

    ``box`` is ``(xmin, ymin, xmax, ymax)`` in the VOC convention: 1-based pixel coordinates,
    both ends inclusive (a box covering only pixel 1 is ``(1, 1, 1, 1)``, width
    ``xmax - xmin + 1``). ``difficult`` objects are neither required nor penalised.
    """

    class_name: str
    box: tuple[float, float, float, float]
    difficult: bool = False


@dataclass
class DetGroundTruth:
    """The ground truth of a detection split, as the VOC devkit reads it.

    ``objects`` maps every image id of ``image_ids`` (images without objects included, with an
    empty list) to its :class:`DetObject` list; objects of classes outside ``class_names`` are
    ignored by the evaluators. ``iou_strict`` selects the matching rule: ``False`` (default)
    is the devkit's ``IoU >= 0.5``, ``True`` the ``IoU > 0.5`` of the Python ports.
    """

    class_names: Sequence[str]
    image_ids: Sequence[str]
    objects: Mapping[str, Sequence[DetObject]]
    iou_strict: bool = False


@dataclass
class SegGroundTruth:
    """The ground truth of a segmentation split.

    ``class_names`` includes the background: a mask value ``k`` means ``class_names[k]``
    (``background`` is 0 in VOC) and ``ignore_label`` (255) marks pixels that are not scored.
    ``masks`` is either a mapping image id -> ``uint8 [H, W]`` array or a callable
    ``masks(image_id)`` returning it (so that a split is read lazily, one mask at a time);
    use :meth:`mask` to get one.
    """

    class_names: Sequence[str]
    image_ids: Sequence[str]
    masks: Mapping[str, np.ndarray] | Callable[[str], np.ndarray]
    ignore_label: int = 255

    def mask(self, image_id: str) -> np.ndarray:
        """The ground-truth mask of ``image_id``."""
        if callable(self.masks):
            return self.masks(image_id)
        return self.masks[image_id]


@dataclass
class Metrics:
    """An evaluator's answer. ``mean`` and ``per_class`` are fractions in [0, 1]."""

    metric: str
    mean: float
    per_class: dict[str, float]
    extra: dict[str, float] = field(default_factory=dict)


PREDICTION_KINDS = ("cls", "label", "det", "seg")
"""The kinds of :class:`Predictions` an evaluator may accept."""


@dataclass(frozen=True)
class Evaluator:
    """A metric with a stable id, e.g. ``voc07-11pt``, and the prediction kinds it scores.

    ``kinds`` lists the :attr:`Predictions.kind` values it accepts (``cls``, ``label``,
    ``det``, ``seg``); ``voc07-11pt`` for instance scores both ``cls`` and ``det`` predictions and
    dispatches on ``predictions.kind``. ``evaluate(predictions, ground_truth)`` returns
    :class:`Metrics`; the ground truth matches the kind (:class:`ClsGroundTruth`,
    :class:`LabelGroundTruth`, :class:`DetGroundTruth`, :class:`SegGroundTruth`).
    """

    id: str
    kinds: tuple[str, ...]
    evaluate: Callable[[Predictions, Any], Metrics]
    description: str = ""

    def __post_init__(self):
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        unknown = [k for k in kinds if k not in PREDICTION_KINDS]
        if not kinds or unknown:
            raise ValueError(f"evaluator {self.id!r}: kinds {kinds} must be a non-empty subset "
                             f"of {PREDICTION_KINDS}")
        object.__setattr__(self, "kinds", kinds)


@dataclass(frozen=True)
class Backbone:
    """A network family with the fixed stage names ``conv1``..``conv5``, ``fc6``, ``fc7``.

    ``build(in_channels=3)`` returns a fresh, randomly initialised
    :class:`~benchharness.backbones.AlexNetTrunk`;
    ``input_size`` is the side of the square crop it expects.
    """

    name: str
    build: Callable[[], Any]
    input_size: int
    description: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset the harness can read, and how to find it under a data root.

    ``locate(data_root)`` returns the dataset's directory or raises :class:`DataError` whose
    message says where the data is expected and how to get it.
    """

    name: str
    locate: Callable[[Path], Path]
    description: str = ""
