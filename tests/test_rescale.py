"""Krahenbuhl et al.'s data-dependent rescaling: within-layer unit variance, between-layer
equalised change rates, function preserved up to a positive scale where it should be."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchharness.backbones import build
from benchharness.rescale import (affine_layers, between_layer_scale, change_rates,
                                  channel_statistics, rescale_trunk)


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    return torch.randn(16, 3, 64, 64)


@pytest.fixture
def trunk():
    torch.manual_seed(1)
    return build("alexnet-small").eval()


def _spread(rates: dict) -> float:
    logs = [math.log(r) for r in rates.values()]
    return max(logs) - min(logs)


def test_within_layer_gives_unit_variance_per_channel(trunk, batch):
    stats = rescale_trunk(trunk, batch, between_layer=False)
    assert set(stats["within_layer"]) == {name for name, _ in affine_layers(trunk)}
    for name, layer in affine_layers(trunk):
        _, std = channel_statistics(trunk, batch, layer)
        assert torch.allclose(std, torch.ones_like(std), atol=1e-3), name


def test_within_layer_target_mean_sets_channel_means(trunk, batch):
    rescale_trunk(trunk, batch, between_layer=False, target_mean=0.0)
    for name, layer in affine_layers(trunk):
        mean, std = channel_statistics(trunk, batch, layer)
        assert mean.abs().max() < 1e-3, name
        assert torch.allclose(std, torch.ones_like(std), atol=1e-3), name


def test_within_layer_on_one_layer_matches_hand_computation(trunk, batch):
    # conv1 sees the raw input, so its normalisation can be checked against a direct computation
    conv = trunk.conv1.conv
    with torch.no_grad():
        pre = conv(batch)
    std = pre.transpose(0, 1).reshape(pre.shape[1], -1).std(1, unbiased=False)
    expected = conv.weight.detach() / std.view(-1, 1, 1, 1)
    rescale_trunk(trunk, batch, between_layer=False)
    assert torch.allclose(conv.weight, expected, rtol=1e-4, atol=1e-6)


def test_between_layer_preserves_output_up_to_positive_scale(trunk, batch):
    head = nn.Linear(trunk.out_dim, 20)
    with torch.no_grad():
        before = head(trunk(batch))
    stats = rescale_trunk(trunk, batch, within_layer=False, head=head,
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = head(trunk(batch))
    scale = stats["between_layer"]["output_scale"]
    assert scale > 0 and abs(math.log(scale)) > 1e-3  # the output did change scale...
    cosine = nn.functional.cosine_similarity(before, after, dim=1)
    assert cosine.min() > 1 - 1e-5  # ...but not direction
    assert torch.equal(before.argmax(1), after.argmax(1))
    # the biases were compensated: the output is the old one times the product of the factors
    assert torch.allclose(after, before * scale, rtol=1e-3, atol=1e-5 * before.abs().max().item())


def test_between_layer_equalises_change_rates(trunk, batch):
    rates_before, _ = change_rates(trunk, batch, generator=torch.Generator().manual_seed(5))
    stats = between_layer_scale(trunk, batch, generator=torch.Generator().manual_seed(5))
    assert stats["rates_before"] == pytest.approx(rates_before)
    assert _spread(rates_before) > 0.5  # a random AlexNet's layers change at different rates
    assert _spread(stats["rates_after"]) < 0.02
    # measured independently, with fresh random gradients, the rates are still far closer
    fresh, output_std = change_rates(trunk, batch, generator=torch.Generator().manual_seed(99))
    assert _spread(fresh) < 0.5 * _spread(rates_before)
    assert output_std == pytest.approx(1.0, rel=0.05)


def test_rescale_restores_modes_and_requires_grad(trunk, batch):
    trunk.train()
    for p in trunk.conv1.parameters():
        p.requires_grad_(False)
    rescale_trunk(trunk, batch, iterations=2)
    assert trunk.training
    assert not trunk.conv1.conv.weight.requires_grad
    assert trunk.conv2.conv.weight.requires_grad and trunk.conv2.conv.weight.grad is None


def test_full_rescale_returns_json_friendly_stats(trunk, batch):
    import json
    stats = rescale_trunk(trunk, batch, iterations=3)
    json.dumps(stats)
    assert stats["images"] == len(batch)
    assert 1 <= stats["between_layer"]["iterations"] <= 3
    assert all(torch.isfinite(p).all() for p in trunk.parameters())


def test_rescale_refuses_a_single_image(trunk, batch):
    with pytest.raises(ValueError, match="at least 2 images"):
        rescale_trunk(trunk, batch[:1])


def test_dead_channels_are_left_alone(trunk, batch):
    with torch.no_grad():
        trunk.conv1.conv.weight[0].zero_()  # channel 0 is now constant (its bias)
        trunk.conv1.conv.bias[0] = 0.5
    before = trunk.conv1.conv.bias[0].item()
    stats = rescale_trunk(trunk, batch, between_layer=False)
    assert stats["within_layer"]["conv1"]["dead_channels"] == 1
    assert trunk.conv1.conv.bias[0].item() == before
    assert torch.isfinite(trunk.conv1.conv.weight).all()
