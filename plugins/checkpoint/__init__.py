"""``checkpoint:PATH``: evaluate weights the user already has.

PATH may be a ``.caffemodel`` (with ``--backbone caffenet``; a ``<stem>.prototxt`` or
``deploy.prototxt`` beside it is used for the layer settings), a ``.safetensors`` file (stage
names, torchvision AlexNet names, or written by ``benchharness convert``), a ``torch.save`` state
dict (read weights-only: a pickle that would run code is refused without being run), or a
benchharness representation directory. See :mod:`benchharness.checkpoint_io`.

Settings of the suite's ``[methods.checkpoint]`` section: ``prototxt``, ``mean_file`` (a mean
``.binaryproto``), ``layer_map`` (stage -> layer name, ``""`` leaves a stage random), ``input``
(input convention fields) and ``group`` (default ``sup``).
"""

from __future__ import annotations

from pathlib import Path

from benchharness import hookimpl
from benchharness.checkpoint_io import LoadOptions, companion_files, load_checkpoint
from benchharness.interfaces import DataError, Method, RunContext
from benchharness.representation import Representation


def pretrain(ctx: RunContext) -> Representation:
    """Load the weights at ``ctx.method_arg`` into the run's backbone."""
    if not ctx.method_arg:
        raise DataError("checkpoint", "give the weights as --method checkpoint:PATH")
    rep, report = load_checkpoint(Path(ctx.method_arg), ctx.backbone, LoadOptions.from_config(ctx.config))
    if report.get("input_source"):
        ctx.log(f"checkpoint {Path(ctx.method_arg).name}: input from {report['input_source']}")
    if report.get("unused"):
        ctx.log(f"checkpoint {Path(ctx.method_arg).name}: not used: {', '.join(report['unused'])}")
    return rep


def argument_files(arg: str, config: dict) -> list[Path]:
    """The prototxt and mean file read with the checkpoint (their bytes join its cache key)."""
    return companion_files(Path(arg), LoadOptions.from_config(config))


@hookimpl
def benchharness_methods():
    """Evaluate a user's own weights: ``--method checkpoint:PATH``."""
    return [Method("checkpoint", "sup", ("images",), pretrain,
                   "a user's own weights: --method checkpoint:PATH (.caffemodel with --backbone "
                   "caffenet, .safetensors, torch.save state dict read weights-only, or a "
                   "benchharness representation directory)",
                   takes_argument=True, argument_files=argument_files)]
