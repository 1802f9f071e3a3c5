"""Every method stores its held-out pretext figure beside the untrained network's (``value_at_init``).

Two checks that need no knowledge of the networks' numbers: with a learning rate of 0 training
changes nothing, so the trained figure must equal ``value_at_init`` (the same function on the
same held-out data); and ``value_at_init`` is taken before training, so a run that does train
(same seed) stores the very same ``value_at_init``.
"""

from __future__ import annotations

import math

import pytest
import torch

from benchharness.interfaces import RunContext
from benchharness.plugins import Registry
from benchharness.training import with_value_at_init

TINY = {
    "supervised": {"epochs": 1, "batch_size": 16},
    "context": {"steps": 2, "batch_size": 8, "eval_grids": 1},
    "colorization": {"steps": 2, "batch_size": 8},
    "bigan": {"steps": 2, "batch_size": 4, "generator_size": 16, "gen_channels": 8, "disc_channels": 8,
              "disc_hidden": 32, "z_dim": 8},
    "tracking": {"epochs": 1, "warmup_epochs": 1, "batch_size": 8, "held_out": 0.2},
    "sound": {"epochs": 1, "batch_size": 8, "clusters": 4, "held_out": 0.2},
}


def _pretext(world, tmp_path, method, config):
    ctx = RunContext(torch.device("cpu"), 0, world, tmp_path / "cache", "alexnet-small", config=config,
                     log=lambda m: None)
    return Registry().methods()[method].pretrain(ctx).meta["pretext"]


@pytest.mark.parametrize("method", sorted(TINY))
def test_value_at_init_is_the_untrained_networks_figure(tiny_world, tmp_path, method):
    frozen = _pretext(tiny_world, tmp_path, method, {**TINY[method], "lr": 0.0})
    trained = _pretext(tiny_world, tmp_path, method, TINY[method])
    assert math.isfinite(frozen["value_at_init"])
    assert trained["value_at_init"] == frozen["value_at_init"]  # measured before training
    if method != "bigan":  # BiGAN's batch-norm statistics move even at lr 0
        assert frozen["value"] == pytest.approx(frozen["value_at_init"], abs=1e-6)


def test_with_value_at_init_copies_figures_and_tells_when_training_did_not_help():
    said = []
    out = with_value_at_init({"metric": "acc", "value": 0.4, "top5": 0.9}, {"value": 0.5, "top5": 0.7},
                             said.append, extra=("top5", "absent"))
    assert out == {"metric": "acc", "value": 0.4, "top5": 0.9, "value_at_init": 0.5, "top5_at_init": 0.7}
    assert len(said) == 1 and "no better than 0.5 at initialisation" in said[0]
    said.clear()
    lower = {"metric": "l2 (lower is better)", "value": 0.1}
    assert with_value_at_init(lower, {"value": 0.3}, said.append)["value_at_init"] == 0.3 and not said
    assert with_value_at_init(None, {"value": 0.3}) is None
    assert with_value_at_init(lower, None) is lower
