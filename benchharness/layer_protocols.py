"""Layer-wise protocols: which results are measured at one stage of the network, and the order
of the stages in a table.

A protocol named after a stage (``conv1`` .. ``conv5``, ``fc6``, ``fc7``), bare or with a
family prefix (``probe-conv3``, ``knn-fc7``), is a layer-wise result: Table 5.2's shape (one
column per layer) rather than Table 5.3's. The family is the prefix (``""`` for the bare names).
"""

from __future__ import annotations

import re

from .backbones import STAGES

LAYERS = (*STAGES[:5], "max5", *STAGES[5:])
"""Column order of a layer table: conv1 < ... < conv5 < max5 < fc6 < fc7. ``max5`` (conv5
max-pooled over the whole map, a column of Owens et al.'s table) has no measured protocol."""

FAMILIES = ("", "probe", "knn")
"""The protocol families: bare stage names, ``probe-<stage>``, ``knn-<stage>``."""

_PATTERN = re.compile(r"^(?:(probe|knn)-)?(" + "|".join(STAGES) + r")$")


def layer_of(protocol) -> tuple[str, str] | None:
    """``(family, layer)`` of a layer-wise protocol (``probe-conv3`` -> ``("probe", "conv3")``,
    ``conv2`` -> ``("", "conv2")``), or None for any other protocol."""
    match = _PATTERN.match(str(protocol))
    return (match.group(1) or "", match.group(2)) if match else None


def is_layer_protocol(protocol) -> bool:
    """Whether ``protocol`` is layer-wise (see :func:`layer_of`)."""
    return layer_of(protocol) is not None


def layer_key(layer: str) -> int:
    """A layer's place in :data:`LAYERS` (unknown names after them)."""
    return LAYERS.index(layer) if layer in LAYERS else len(LAYERS)
