"""Weights a user already has, read into a :class:`Representation`, with a report of what was used.

Formats (chosen by the file, never by unpickling):

- ``.caffemodel``: a Caffe CaffeNet/AlexNet (:mod:`.caffe_model`); the network's layout (groups,
  LRN place, fc widths ...) comes from the file or from a ``deploy.prototxt``, the input
  convention is Caffe's (BGR, 0-255, mean pixel subtracted) unless told otherwise;
- ``.safetensors``: stage names (``conv1.conv.weight`` ...) or torchvision AlexNet names; a file
  written by ``benchharness convert`` also carries its trunk spec and input convention;
- anything else: a ``torch.save`` state dict read with ``weights_only=True``;
- a directory written by benchharness (``representation.json`` + ``weights.safetensors``).

conv1..conv5 must all be present; fc6/fc7 are used when present. A missing or mis-shaped key is
an error naming it; keys and layers that are not used are listed in the report, never dropped
silently.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from . import atomic
from .backbones import CONV_STAGES, FC_STAGES, SPECS, STAGES, AlexNetTrunk, TrunkSpec, from_torchvision_keys
from .caffe_model import read_mean, read_net, spec_from, to_trunk
from .interfaces import DataError
from .representation import CAFFE_BGR, InputConvention, Representation, load_state_checked, read_safetensors

CONVERTED_FORMAT = "benchharness-trunk"
CAFFE_L = InputConvention(mode="lab-l", mean=(50.0,), std=(1.0,))  # Zhang et al.: L - 50


@dataclass
class LoadOptions:
    """How to read a checkpoint; every field can be set in the suite's ``[methods.checkpoint]``."""

    prototxt: str | None = None  # a deploy.prototxt for a .caffemodel
    mean_file: str | None = None  # a mean .binaryproto: its per-channel mean is subtracted
    layer_map: dict[str, str] = field(default_factory=dict)  # stage -> Caffe layer ("" = random)
    input: dict[str, Any] = field(default_factory=dict)  # InputConvention fields

    @classmethod
    def from_config(cls, config: dict, where: str = "[methods.checkpoint]") -> "LoadOptions":
        """From a method's suite section; keys other than these (and ``group``, ``seed``) are errors."""
        known = {"prototxt", "mean_file", "layer_map", "input"}
        unknown = set(config) - known - {"group", "seed"}
        if unknown:
            raise DataError(where, f"unknown settings {sorted(unknown)}; known: {sorted(known | {'group'})}")
        return cls(**{k: v for k, v in config.items() if k in known})


def find_prototxt(model: Path) -> Path | None:
    """A prototxt beside a caffemodel: ``<stem>.prototxt``, else ``deploy.prototxt``."""
    for candidate in (model.with_suffix(".prototxt"), model.parent / "deploy.prototxt"):
        if candidate.is_file():
            return candidate
    return None


def companion_files(path: Path, options: LoadOptions) -> list[Path]:
    """The files read together with a checkpoint: the prototxt and mean file of a caffemodel."""
    path = Path(path).expanduser()
    files = []
    if path.suffix == ".caffemodel":
        prototxt = Path(options.prototxt).expanduser() if options.prototxt else find_prototxt(path)
        files += [prototxt] if prototxt else []
    if options.mean_file:
        files.append(Path(options.mean_file).expanduser())
    for f in files:
        if not f.is_file():
            raise DataError(f, "file not found")
    return files


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a weights-only ``torch.save`` file, never unpickled."""
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except pickle.UnpicklingError as exc:
        raise DataError(path, "refused: not a weights-only checkpoint (the pickle asks to run or "
                              f"import code, which is never allowed): {str(exc).splitlines()[0]}") from None
    except Exception as exc:
        raise DataError(path, f"not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(path, "expected a state dict (a mapping of names to tensors)")
    return obj


def to_stage_names(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Accept torchvision AlexNet names, ``module.`` prefixes, or stage names; returns the state
    under stage names and the keys that are not used (e.g. torchvision's ``classifier.6``)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    unused: list[str] = []
    if any(k.startswith("features.") for k in state):
        state, unused = from_torchvision_keys(state)
    unused += [k for k in state if k.split(".")[0] not in STAGES]
    return {k: v for k, v in state.items() if k.split(".")[0] in STAGES}, sorted(unused)


def _stored_header(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except Exception:  # read_safetensors reports a bad file with its reason
        return {}


def _convention(options: LoadOptions, default: InputConvention, where: Path | str) -> InputConvention:
    raw = asdict(default)
    if options.mean_file:
        raw["mean"] = mean_image_channels(read_mean(Path(options.mean_file).expanduser()))
        raw["std"] = (1.0,) * len(raw["mean"])
    raw.update(options.input)
    try:
        return InputConvention.from_mapping(raw)
    except ValueError as exc:
        raise DataError(where, f"input convention: {exc}") from None


def _caffe_default_convention(net, in_channels: int) -> tuple[InputConvention, str]:
    """Caffe's BGR mean-pixel convention (or L - 50 for a 1-channel conv1) and where it came
    from; a prototxt's own ``transform_param`` (``mean_value``, ``mean_file`` found beside the
    prototxt or the model, ``scale``) replaces the defaults."""
    if in_channels == 1:
        return CAFFE_L, "1-channel conv1: L - 50 (Zhang et al.)"
    raw, source = asdict(CAFFE_BGR), "Caffe's default mean pixel (104, 117, 123)"
    t = net.transform
    if t.get("mean_value"):
        means = t["mean_value"] * (3 if len(t["mean_value"]) == 1 else 1)
        raw["mean"], source = tuple(float(m) for m in means), "the file's transform_param mean_value"
    elif t.get("mean_file"):
        folders = [p.parent for p in (net.prototxt, net.source) if p is not None]
        found = [f / Path(t["mean_file"]).name for f in folders if (f / Path(t["mean_file"]).name).is_file()]
        if found:
            raw["mean"] = mean_image_channels(read_mean(found[0]))
            source = f"per-channel mean of {found[0]} (the file's transform_param mean_file)"
        else:
            source += (f"; the file names mean_file {t['mean_file']!r}, not found beside it: pass "
                       "it as mean_file / --mean-file")
    if t.get("scale") and t["scale"] != 1.0:  # Caffe subtracts the mean, then scales
        raw["std"] = tuple(1.0 / t["scale"] for _ in range(3))
    return InputConvention.from_mapping(raw), source


def load_checkpoint(path: Path, backbone: str, options: LoadOptions | None = None
                    ) -> tuple[Representation, dict[str, Any]]:
    """Read ``path`` into a representation of ``backbone``; returns it with the load report
    (format, stages used and where from, unused keys or layers, input convention)."""
    options = options or LoadOptions()
    path = Path(path).expanduser()
    if path.is_dir():
        rep = Representation.load(path)
        return rep, {"format": "benchharness representation", "source": str(path), "unused": []}
    if not path.exists():
        raise DataError(path, "file not found")
    if path.suffix == ".caffemodel":
        return _load_caffemodel(path, backbone, options)
    header = _stored_header(path) if path.suffix == ".safetensors" else {}
    state, unused = to_stage_names(read_state_dict(path))
    if header.get("format") == CONVERTED_FORMAT:
        if header.get("backbone") != backbone:
            raise DataError(path, f"holds a {header.get('backbone')} trunk; run it with --backbone "
                                  f"{header.get('backbone')} (this run's backbone is {backbone})")
        spec = TrunkSpec.from_json(json.loads(header["spec"]))
        default = InputConvention.from_mapping(json.loads(header["input"]))
        fmt = "safetensors (benchharness convert)"
    else:
        if backbone not in SPECS:
            raise DataError(path, f"unknown backbone {backbone!r}")
        spec, default = SPECS[backbone], InputConvention()
        fmt = "safetensors" if path.suffix == ".safetensors" else "torch.save state dict"
    convention = _convention(options, default, path)
    network = AlexNetTrunk(spec, in_channels=convention.channels)
    has_fc = tuple(s for s in FC_STAGES if any(k.startswith(f"{s}.") for k in state))
    stages = CONV_STAGES + has_fc
    load_state_checked(network, state, path, required_prefixes=stages)
    report = {"format": fmt, "source": str(path), "stages": list(stages), "unused": unused,
              "input": asdict(convention)}
    return Representation(network, backbone, convention, learned_stages=stages,
                          meta={"pretrain_data": f"checkpoint {path.name}", "checkpoint": str(path),
                                "load_report": report}), report


def _load_caffemodel(path: Path, backbone: str, options: LoadOptions):
    if backbone != "caffenet":
        raise DataError(path, f"a .caffemodel holds a Caffe network: run it with --backbone caffenet "
                              f"(or backbone = \"caffenet\" in the suite), not {backbone!r}")
    prototxt = Path(options.prototxt).expanduser() if options.prototxt else find_prototxt(path)
    net = read_net(path, prototxt)
    loaded = to_trunk(net, options.layer_map)
    spec = spec_from(SPECS[backbone], loaded)
    default, input_source = _caffe_default_convention(net, loaded.in_channels)
    convention = _convention(options, default, path)
    if options.mean_file or options.input:
        input_source = "the suite's / command line's mean_file and input settings"
    if convention.channels != loaded.in_channels:
        raise DataError(path, f"conv1 takes {loaded.in_channels} channels but the input convention "
                              f"{convention.mode} gives {convention.channels}")
    network = AlexNetTrunk(spec, in_channels=loaded.in_channels)
    load_state_checked(network, loaded.state, path, required_prefixes=loaded.stages)
    report = {"format": f"caffemodel ({net.encoding} encoding)", "source": str(path),
              "prototxt": str(prototxt) if prototxt else None,
              "stages": {stage: name for stage, name in loaded.used.items()},
              "unused": loaded.unused, "ignored_after_fc": loaded.ignored_after,
              "spec": loaded.spec_fields, "input": asdict(convention), "input_source": input_source}
    return Representation(network, backbone, convention, learned_stages=loaded.stages,
                          meta={"pretrain_data": f"checkpoint {path.name}", "checkpoint": str(path),
                                "load_report": report}), report


def save_converted(rep: Representation, out: Path) -> Path:
    """Write a representation's trunk as one ``.safetensors`` with its spec and input convention
    in the header (``checkpoint:`` and every command read them back)."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise DataError(out, "the output of convert is a .safetensors file")
    state = {k: v.detach().cpu().contiguous() for k, v in rep.network.state_dict().items()
             if k.split(".")[0] in rep.learned_stages}
    meta = {"format": CONVERTED_FORMAT, "backbone": rep.backbone,
            "spec": json.dumps(rep.network.spec.to_json()), "input": json.dumps(asdict(rep.input)),
            "source": str(rep.meta.get("checkpoint", ""))}
    atomic.write_bytes(out, save(state, metadata=meta))
    return out


def mean_image_channels(mean: np.ndarray) -> tuple[float, ...]:
    """The per-channel average of a Caffe mean image [C, H, W]."""
    return tuple(float(m) for m in mean.reshape(mean.shape[0], -1).mean(1))
