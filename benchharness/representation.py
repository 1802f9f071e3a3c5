"""The Representation: what a method learned, in the form every task can use.

On disk a representation is a directory with ``weights.safetensors`` (the trunk's state dict
under the fixed stage names) and ``representation.json`` (backbone, input convention, which
stages were learned, and metadata: method, group, config hash, pretraining data, wall time,
device, pretext measurement). Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from . import atomic
from .backbones import STAGES, AlexNetTrunk, TrunkSpec, build
from .interfaces import DataError
from .mappings import dataclass_from_mapping

FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputConvention:
    """How images must be prepared for the network.

    ``mode`` is ``rgb`` (3 colour channels) or ``lab-l`` (the L channel of CIE Lab, 0..100, for
    colorization-trained networks; ``mean``/``std`` then have one entry). Colour pixels in
    [0, 1] are multiplied by ``pixel_scale`` (255 for Caffe models), put in ``channel_order``
    (``bgr`` for Caffe models), then ``(x - mean) / std`` per channel, with ``mean`` and ``std``
    given in that order and on that scale. Caffe's convention is :data:`CAFFE_BGR`.
    """

    mode: str = "rgb"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channel_order: str = "rgb"
    pixel_scale: float = 1.0

    def __post_init__(self):
        if self.mode not in ("rgb", "lab-l"):
            raise ValueError(f"unknown input mode {self.mode!r}; choose rgb or lab-l")
        if self.channel_order not in ("rgb", "bgr"):
            raise ValueError(f"unknown channel_order {self.channel_order!r}; choose rgb or bgr")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"input mode {self.mode} needs {self.channels} mean and std values, "
                             f"got mean {self.mean} and std {self.std}")

    @classmethod
    def from_mapping(cls, raw: dict) -> "InputConvention":
        """From JSON / TOML values (lists become tuples); unknown keys are an error naming them."""
        return dataclass_from_mapping(cls, raw, "input")

    @property
    def channels(self) -> int:
        return 1 if self.mode == "lab-l" else 3

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Turn a float RGB batch in [0, 1], shape [N, 3, H, W], into network input."""
        if self.mode == "lab-l":
            # L* of CIE Lab from sRGB (D65): linearise, luminance, cube-root law, scale to 0..100
            lin = torch.where(images <= 0.04045, images / 12.92, ((images + 0.055) / 1.055) ** 2.4)
            y = (0.2126 * lin[:, 0] + 0.7152 * lin[:, 1] + 0.0722 * lin[:, 2]).clamp_min(0)
            f = torch.where(y > (6 / 29) ** 3, y.pow(1 / 3), y / (3 * (6 / 29) ** 2) + 4 / 29)
            images = (116 * f - 16).unsqueeze(1)
        else:
            if self.pixel_scale != 1.0:
                images = images * self.pixel_scale
            if self.channel_order == "bgr":
                images = images.flip(1)
        mean = torch.tensor(self.mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
        return (images - mean) / std


# Caffe's convention (the published CaffeNet models): BGR, 0-255, the ImageNet mean pixel
# (104, 117, 123) subtracted, as philkr/voc-classification feeds them (the mean of Caffe's
# ilsvrc_2012_mean.binaryproto image is 104.0, 116.7, 122.7).
CAFFE_BGR = InputConvention(mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), channel_order="bgr",
                            pixel_scale=255.0)


def default_convention(backbone: str) -> InputConvention:
    """The input convention a freshly built trunk of ``backbone`` is meant for: Caffe's for
    ``caffenet`` (its fillers assume 0-255 pixels), torchvision's ImageNet normalisation else."""
    return CAFFE_BGR if backbone == "caffenet" else InputConvention()


@dataclass
class Representation:
    """A trained (or random) AlexNet-family trunk plus how to feed it and where it came from.

    ``learned_stages`` names the stages whose weights the method produced; the others are
    random (a task may re-initialise them). ``meta`` holds at least ``method``, ``group``,
    ``config_hash``, ``pretrain_data``, ``pretrain_seconds`` and ``device``.
    """

    network: AlexNetTrunk
    backbone: str
    input: InputConvention = field(default_factory=InputConvention)
    learned_stages: tuple[str, ...] = STAGES
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: Path) -> Path:
        """Write weights and sidecar into ``directory`` atomically (all or nothing)."""
        directory = Path(directory)
        tmp = atomic.staging_dir(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        save_file(state, str(tmp / "weights.safetensors"), metadata={"format": "benchharness"})
        sidecar = {"format_version": FORMAT_VERSION, "backbone": self.backbone,
                   "input": asdict(self.input), "spec": self.network.spec.to_json(),
                   "learned_stages": list(self.learned_stages),
                   "meta": self.meta}
        (tmp / "representation.json").write_text(json.dumps(sidecar, indent=2, default=str) + "\n")
        atomic.publish_dir(tmp, directory)
        return directory

    @classmethod
    def load(cls, directory: Path) -> "Representation":
        """Read a representation written by :meth:`save`."""
        directory = Path(directory)
        sidecar_path = directory / "representation.json"
        try:
            sidecar = json.loads(sidecar_path.read_text())
        except FileNotFoundError:
            raise DataError(sidecar_path, "missing representation sidecar") from None
        except json.JSONDecodeError as exc:
            raise DataError(sidecar_path, f"not valid JSON ({exc})") from None
        try:
            convention = InputConvention.from_mapping(sidecar["input"])
            network = (AlexNetTrunk(TrunkSpec.from_json(sidecar["spec"]), convention.channels)
                       if "spec" in sidecar else build(sidecar["backbone"], in_channels=convention.channels))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(sidecar_path, f"bad representation sidecar ({type(exc).__name__}: {exc})") from None
        load_state_checked(network, read_safetensors(directory / "weights.safetensors"),
                           directory / "weights.safetensors")
        return cls(network, sidecar["backbone"], convention,
                   tuple(sidecar.get("learned_stages", STAGES)), sidecar.get("meta", {}))


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning library errors into a DataError naming the file."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise DataError(path, f"not a readable safetensors file ({exc})") from None


def load_state_checked(network: torch.nn.Module, state: dict[str, torch.Tensor], source: Path,
                       required_prefixes: tuple[str, ...] = STAGES) -> None:
    """Copy ``state`` into ``network``; a missing, unexpected or mis-shaped key is a DataError.

    Only keys under ``required_prefixes`` must be present (a checkpoint may omit fc stages when
    passed a subset). NaN or infinite weights are refused too.
    """
    own = network.state_dict()
    for key, tensor in own.items():
        if key.split(".")[0] not in required_prefixes:
            continue
        if key not in state:
            raise DataError(source, f"missing key {key!r} (expected shape {tuple(tensor.shape)})")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise DataError(source, f"key {key!r} has shape {tuple(state[key].shape)}, "
                                    f"expected {tuple(tensor.shape)}")
        if state[key].is_floating_point() and not torch.isfinite(state[key]).all():
            raise DataError(source, f"key {key!r} contains NaN or infinite values")
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise DataError(source, f"unexpected key {unexpected[0]!r}"
                                + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""))
    with torch.no_grad():
        for key, tensor in state.items():
            own[key].copy_(tensor)
