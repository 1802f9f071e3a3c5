"""``random``: the untrained baseline (group ``none``): a freshly initialised trunk."""

from __future__ import annotations

import torch

from benchharness import hookimpl
from benchharness.interfaces import Method, RunContext
from benchharness.representation import Representation, default_convention


def pretrain(ctx: RunContext) -> Representation:
    """Gaussian-initialised weights from the seed (the backbone's own init and input
    convention: Caffe's fillers and BGR 0-255 for ``caffenet``); no stage counts as learned."""
    torch.manual_seed(int(ctx.config.get("init_seed", ctx.seed)))
    network = ctx.build_backbone()
    return Representation(network, ctx.backbone, default_convention(ctx.backbone), learned_stages=(),
                          meta={"pretrain_data": "none"})


@hookimpl
def benchharness_methods():
    """The random-initialisation baseline."""
    return [Method("random", "none", (), pretrain, "random Gaussian initialisation (no pretraining)")]
