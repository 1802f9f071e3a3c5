"""``--rescale`` = Krahenbuhl et al.'s magic_init: the layers a method lacks get data-dependent
weights (unit std, mean 0.1 per channel), learned layers keep theirs, then every layer's change
rate is equalised by positive factors; det and seg jobs run with it."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from benchharness.backbones import STAGES, build
from benchharness.interfaces import RunContext
from benchharness.representation import Representation
from benchharness.rescale import (INIT_BIAS, calibrate_gradient_ratio, change_rates,
                                  channel_statistics, initialise_layers, magic_init,
                                  parameter_layers, rescaled, resized_batch)


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    return torch.randn(16, 3, 64, 64)


@pytest.fixture
def trunk():
    torch.manual_seed(1)
    return build("alexnet-small").eval()


def _mean_rates(network, head, images, draws=16):
    """Change rates averaged (in log) over several random draws, to measure them without the
    noise of one draw."""
    gen = torch.Generator().manual_seed(123)
    logs = [{k: math.log(v) for k, v in change_rates(network, head, images, gen).items()}
            for _ in range(draws)]
    return {k: sum(d[k] for d in logs) / draws for k in logs[0]}


def _spread(log_rates: dict) -> float:
    return max(log_rates.values()) - min(log_rates.values())


def test_initialised_layers_get_unit_std_and_mean_0_1_and_learned_ones_are_kept(trunk, batch):
    head = nn.Linear(trunk.out_dim, 1000)
    learned = ("conv1", "conv2", "conv3")
    before = {n: layer.weight.detach().clone() for n, layer in parameter_layers(trunk)}
    stats = initialise_layers(trunk, batch, [s for s in STAGES if s not in learned] + ["fc8"], head,
                              generator=torch.Generator().manual_seed(0))
    assert set(stats) == {"conv4", "conv5", "fc6", "fc7", "fc8"}
    for name, layer in parameter_layers(trunk, head):
        if name in learned:
            assert torch.equal(layer.weight, before[name]), name
            continue
        mean, std = channel_statistics(trunk, batch, layer, head)
        torch.testing.assert_close(std, torch.ones_like(std), atol=1e-3, rtol=0)
        torch.testing.assert_close(mean, torch.full_like(mean, INIT_BIAS), atol=1e-3, rtol=0)


def test_conv1_initialisation_matches_a_hand_computation(trunk, batch):
    conv = trunk.conv1.conv
    initialise_layers(trunk, batch, ["conv1"], generator=torch.Generator().manual_seed(7))
    raw = torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(7))
    pre = nn.functional.conv2d(batch, raw, stride=conv.stride, padding=conv.padding)
    flat = pre.transpose(0, 1).reshape(pre.shape[1], -1).double()
    std, mean = flat.std(1, unbiased=False), flat.mean(1)
    torch.testing.assert_close(conv.weight, (raw / std.view(-1, 1, 1, 1)).float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(conv.bias, (INIT_BIAS - mean / std).float(), rtol=1e-4, atol=1e-5)


def test_calibration_equalises_change_rates_and_keeps_directions(trunk, batch):
    head = nn.Linear(trunk.out_dim, 1000)
    initialise_layers(trunk, batch, ["fc8"], head, generator=torch.Generator().manual_seed(0))
    before_rates = _mean_rates(trunk, head, batch)
    with torch.no_grad():
        out_before = head(trunk(batch))
    stats = calibrate_gradient_ratio(trunk, head, batch, torch.Generator().manual_seed(3))
    after_rates = _mean_rates(trunk, head, batch)
    assert _spread(before_rates) > 2.0  # a random AlexNet's layers change at different rates
    # each round draws fresh random gradients (as the tool does), so the rates are equal up to
    # the noise of one draw on one batch of 16 (about +-0.1 in log here)
    assert _spread(after_rates) < 0.25
    assert stats["output_std"] == pytest.approx(1.0, rel=0.05)  # fc8's channels had std 1
    assert stats["rounds"] >= 1 and set(stats["scales"]) == set(before_rates)
    with torch.no_grad():
        out_after = head(trunk(batch))
    # only scales change: a ReLU/max-pool net's output is the old one times a positive constant
    cosine = nn.functional.cosine_similarity(out_before, out_after, dim=1)
    assert cosine.min() > 1 - 1e-4
    assert torch.equal(out_before.argmax(1), out_after.argmax(1))


def test_magic_init_keeps_modes_flags_and_is_json_friendly(trunk, batch):
    trunk.train()
    for p in trunk.conv1.parameters():
        p.requires_grad_(False)
    stats = magic_init(trunk, batch, learned_stages=STAGES, generator=torch.Generator().manual_seed(0))
    json.dumps(stats)
    assert trunk.training
    assert not trunk.conv1.conv.weight.requires_grad and trunk.conv2.conv.weight.grad is None
    assert stats["initialised"] == ["fc8"] and stats["kept"] == list(STAGES)
    assert stats["images"] == 16 and stats["calibration_images"] == 16
    assert all(torch.isfinite(p).all() for p in trunk.parameters())
    with pytest.raises(ValueError, match="at least 2 images"):
        magic_init(trunk, batch[:1], STAGES)


def test_rescaled_copies_and_is_the_same_every_time():
    torch.manual_seed(0)
    rep = Representation(build("alexnet-small"), "alexnet-small", learned_stages=("conv1",))
    original = {k: v.clone() for k, v in rep.network.state_dict().items()}
    images = [torch.randint(0, 256, (3, 40 + i, 50), dtype=torch.uint8) for i in range(6)]
    a, stats = rescaled(rep, images, 4, torch.device("cpu"))
    b, _ = rescaled(rep, images, 4, torch.device("cpu"))
    assert stats["images"] == 4 and stats["initialised"][0] == "conv2"
    assert all(torch.equal(v, original[k]) for k, v in rep.network.state_dict().items())
    assert all(torch.equal(v, b.network.state_dict()[k]) for k, v in a.network.state_dict().items())
    assert a.learned_stages == rep.learned_stages and a.input == rep.input
    # conv1 was learned: only the calibration's positive factor touched it
    w0, w1 = original["conv1.conv.weight"], a.network.state_dict()["conv1.conv.weight"]
    ratio = w1 / w0
    assert ratio.min() > 0 and torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-4)
    assert resized_batch(images[:2], 64).shape == (2, 3, 64, 64)


@pytest.mark.parametrize("task", ["voc07-det", "voc12-seg"])
def test_rescale_runs_for_detection_and_segmentation(tiny_world, tmp_path, task, monkeypatch):
    from benchharness.tasks import detection, segmentation
    module = detection if task == "voc07-det" else segmentation
    model_class = "FastRCNN" if task == "voc07-det" else "FCN32s"
    made, built = [], []  # the rescaled representation, and what the task's model was built from
    real_rescaled, real_model = module.rescaled, getattr(module, model_class)
    monkeypatch.setattr(module, "rescaled", lambda *a, **k: made.append(real_rescaled(*a, **k)) or made[-1])
    monkeypatch.setattr(module, model_class, lambda rep, *a, **k: built.append(rep) or real_model(rep, *a, **k))
    rep = Representation(build("alexnet-small"), "alexnet-small", learned_stages=())
    config = {"epochs": 1, "rescale": True, "rescale_images": 8}
    if task == "voc07-det":
        config |= {"scale": 64, "max_size": 100, "rois_per_image": 8, "ss_mode": "fast"}
        transfer = detection.transfer
    else:
        config |= {"batch_size": 4, "scale": 48}
        transfer = segmentation.transfer
    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path, "alexnet-small", config=config)
    out = transfer(rep, "fc6-8", ctx)
    stats = out.info["rescale"]
    assert stats["images"] == 8 and stats["initialised"] == list(STAGES) + ["fc8"]
    assert stats["calibration"]["rounds"] >= 1
    assert built == [made[0][0]]  # the model trains the rescaled copy, not the original
    assert not torch.equal(made[0][0].network.conv1.conv.weight, rep.network.conv1.conv.weight)
    json.dumps(out.info)
