"""``checkpoint:PATH``: evaluate weights the user already has.

PATH may be
- a ``.safetensors`` file with either benchharness stage names (``conv1.conv.weight``...) or
  torchvision AlexNet names (``features.0.weight``...);
- a torchvision AlexNet state dict saved with ``torch.save`` (optionally under a
  ``state_dict`` key), read with ``torch.load(..., weights_only=True)``: a pickle that would run
  code is refused without being run;
- a directory written by benchharness (``representation.json`` + ``weights.safetensors``).

conv1..conv5 must all be present; fc6/fc7 are used when present (both, with the right shapes)
and left random otherwise. A missing or mis-shaped key is an error naming the key. The group
defaults to ``sup`` (set ``group`` in the suite's ``[methods.checkpoint]`` section).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from benchharness import hookimpl
from benchharness.backbones import CONV_STAGES, FC_STAGES, STAGES, from_torchvision_keys
from benchharness.interfaces import DataError, Method, RunContext
from benchharness.representation import (InputConvention, Representation, load_state_checked,
                                         read_safetensors)


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


def to_stage_names(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Accept torchvision AlexNet names, ``module.`` prefixes, or benchharness stage names."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("features.") for k in state):
        state, _ = from_torchvision_keys(state)
    return {k: v for k, v in state.items() if k.split(".")[0] in STAGES}


def pretrain(ctx: RunContext) -> Representation:
    """Load the weights at ``ctx.method_arg`` into the run's backbone."""
    if not ctx.method_arg:
        raise DataError("checkpoint", "give the weights as --method checkpoint:PATH")
    path = Path(ctx.method_arg).expanduser()
    if path.is_dir():
        rep = Representation.load(path)
        rep.meta = {**rep.meta, "pretrain_data": f"checkpoint {path}"}
        return rep
    state = to_stage_names(read_state_dict(path), path)
    has_fc = [s for s in FC_STAGES if any(k.startswith(f"{s}.") for k in state)]
    required = CONV_STAGES + tuple(has_fc)
    convention = InputConvention(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in ctx.config.get("input", {}).items()})
    network = ctx.build_backbone(in_channels=convention.channels)
    load_state_checked(network, state, path, required_prefixes=required)
    return Representation(network, ctx.backbone, convention, learned_stages=required,
                          meta={"pretrain_data": f"checkpoint {path.name}", "checkpoint": str(path)})


@hookimpl
def benchharness_methods():
    """Evaluate a user's own weights: ``--method checkpoint:PATH``."""
    return [Method("checkpoint", "sup", ("images",), pretrain,
                   "a user's own weights: --method checkpoint:PATH (.safetensors, torch.save "
                   "state dict read weights-only, or a benchharness representation directory)",
                   takes_argument=True)]
