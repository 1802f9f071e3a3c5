"""voc07-cls under the reference solver (philkr/voc-classification): Caffe's gradient clipping
before weight decay, the step policy in iterations, dropout under fc8 with frozen fc6/fc7, and
fresh random crops at every iteration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchharness.backbones import build
from benchharness.data.loading.transforms import caffe_scale_boxes, random_crop_batch
from benchharness.interfaces import RunContext
from benchharness.representation import Representation
from benchharness.tasks import classification as cls
from benchharness.tasks.settings import caffe_step_schedule
from benchharness.training import sgd_step

REFERENCE = {"iterations": 6, "batch_size": 8, "stepsize": 2, "gamma": 0.5, "lr": 0.001,
             "weight_decay": 1e-6, "clip_gradients": 10.0, "bias_lr_mult": 2.0, "fc8_bias": 0.1,
             "frozen_dropout": True, "crop_bank": False, "crop_mode": "caffe",
             "crop_scale": [0.5, 2.0], "test_crops": 2}


def test_clipping_scales_the_gradient_to_the_norm_before_weight_decay():
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = torch.optim.SGD([w], lr=0.5, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    loss = (torch.tensor([30.0, 40.0]) * w).sum()  # gradient (30, 40): norm 50
    sgd_step(opt, sched, loss, clip_norm=10.0)
    # Caffe: diff = (30, 40) * 10 / 50 = (6, 8); then decay 0.1 * w; w -= lr * diff
    expected = torch.tensor([1.0 - 0.5 * (6 + 0.1 * 1.0), 2.0 - 0.5 * (8 + 0.1 * 2.0)])
    torch.testing.assert_close(w.detach(), expected)
    # under the threshold nothing is clipped
    w2 = nn.Parameter(torch.tensor([1.0, 2.0]))
    opt2 = torch.optim.SGD([w2], lr=0.5)
    sgd_step(opt2, torch.optim.lr_scheduler.LambdaLR(opt2, lambda _: 1.0),
             (torch.tensor([3.0, 4.0]) * w2).sum(), clip_norm=10.0)
    torch.testing.assert_close(w2.detach(), torch.tensor([1.0 - 1.5, 2.0 - 2.0]))


def test_clipping_uses_the_norm_over_all_parameters_together():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=1.0)
    sgd_step(opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0), 3 * a.sum() + 4 * b.sum(),
             clip_norm=1.0)
    torch.testing.assert_close(torch.cat([a, b]).detach(), torch.tensor([-0.6, -0.8]))


def test_caffe_step_policy_gives_the_reference_learning_rates():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = caffe_step_schedule(opt, stepsize=10000, gamma=0.5)
    seen = {}
    for it in range(30001):
        if it in (0, 9999, 10000, 19999, 20000, 30000):
            seen[it] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    assert seen == pytest.approx({0: 1e-3, 9999: 1e-3, 10000: 5e-4, 19999: 5e-4, 20000: 2.5e-4,
                                  30000: 1.25e-4})
    with pytest.raises(ValueError, match="stepsize"):
        caffe_step_schedule(opt, 0, 0.5)


def test_caffe_crop_boxes_are_squares_of_the_reference_scale_inside_the_image():
    gen = torch.Generator().manual_seed(0)
    boxes = caffe_scale_boxes(4000, 375, 227, (0.5, 2.0), gen)
    side = boxes[:, 2] - boxes[:, 0]
    torch.testing.assert_close(side, boxes[:, 3] - boxes[:, 1])
    assert (boxes >= 0).all() and (boxes <= 375 + 1e-3).all()
    # u ~ U[0.5, min(2, 375 / 227)]: the side is uniform in [113.5, 375]
    assert side.min() >= 113.5 - 1e-3 and side.max() <= 375 + 1e-3
    assert side.mean().item() == pytest.approx((113.5 + 375) / 2, rel=0.02)
    small = caffe_scale_boxes(10, 100, 227, (0.5, 2.0), gen)  # image smaller than the crop
    torch.testing.assert_close(small[:, 2] - small[:, 0], torch.full((10,), 100.0))


def test_fresh_crops_differ_at_every_iteration():
    images = torch.randint(0, 256, (4, 3, 80, 80), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    first = random_crop_batch(images, 32, gen, scale=(0.5, 2.0), mode="caffe")
    second = random_crop_batch(images, 32, gen, scale=(0.5, 2.0), mode="caffe")
    assert first.shape == (4, 3, 32, 32)
    assert all(not torch.equal(first[i], second[i]) for i in range(4))


def _rep():
    torch.manual_seed(0)
    network = build("alexnet-small")
    network.fc6.dropout.p = network.fc7.dropout.p = 0.5  # the small backbone has none
    return Representation(network, "alexnet-small", meta={"config_hash": "cls-protocol"})


def test_fc8_trains_under_active_dropout_with_fc6_fc7_frozen(tiny_world, tmp_path, monkeypatch):
    rep = _rep()
    seen = {"crops": [], "dropout_training": set()}
    real_crops, real_train = cls.random_crop_batch, cls.train

    def spy_crops(images, *args, **kwargs):
        out = real_crops(images, *args, **kwargs)
        seen["crops"].append(out.clone())
        return out

    def spy_train(model, *args, **kwargs):
        before = {k: v.clone() for k, v in model.trunk.state_dict().items()}
        handle = model.trunk.fc7.dropout.register_forward_hook(
            lambda m, i, o: seen["dropout_training"].add(m.training))
        out = real_train(model, *args, **kwargs)
        handle.remove()
        seen["unchanged"] = all(torch.equal(v, before[k]) for k, v in model.trunk.state_dict().items())
        seen["fc8_bias"] = model.fc8.bias.detach().clone()
        return out

    monkeypatch.setattr(cls, "random_crop_batch", spy_crops)
    monkeypatch.setattr(cls, "train", spy_train)
    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path, "alexnet-small", config=REFERENCE)
    out = cls.transfer(rep, "fc8", ctx)
    assert seen["dropout_training"] == {True}  # drop7 ran in training mode at every step
    assert seen["unchanged"]  # ...while fc6 and fc7 (and the convs) kept their weights
    assert not torch.allclose(seen["fc8_bias"], torch.full((20,), 0.1))  # fc8 did train
    assert out.info["iterations"] == 6 and out.info["frozen_dropout"] and not out.info["crop_bank"]
    crops = seen["crops"]
    assert len(crops) == 6  # one fresh draw per iteration, no bank
    assert not torch.equal(crops[0], crops[1])
    assert out.predictions.scores.shape[1] == 20


def test_without_frozen_dropout_fc8_sees_deterministic_features(tiny_world, tmp_path, monkeypatch):
    rep = _rep()
    modes = set()
    real_train = cls.train

    def spy_train(model, *args, **kwargs):
        handle = model.trunk.fc7.dropout.register_forward_hook(lambda m, i, o: modes.add(m.training))
        try:
            return real_train(model, *args, **kwargs)
        finally:
            handle.remove()

    monkeypatch.setattr(cls, "train", spy_train)
    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path, "alexnet-small",
                     config={**REFERENCE, "frozen_dropout": False})
    cls.transfer(rep, "fc8", ctx)
    assert modes == {False}


def test_cached_conv5_features_run_fc6_fc7_with_dropout_per_step(tiny_world, tmp_path, monkeypatch):
    rep = _rep()
    starts = []
    real_head = cls.Classifier.head

    def spy_head(self, h, after=None):
        starts.append((after, self.trunk.fc7.dropout.training))
        return real_head(self, h, after)

    monkeypatch.setattr(cls.Classifier, "head", spy_head)
    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path, "alexnet-small",
                     config={**REFERENCE, "crop_bank": True, "train_crops": 2})
    out = cls.transfer(rep, "fc8", ctx)
    assert out.info["feature_cache"]
    train_calls = starts[:6]
    assert train_calls == [("conv5", True)] * 6  # training starts from conv5, dropout on
    assert all(after is None and not training for after, training in starts[6:])  # testing on fc7


def test_bad_protocol_settings_are_named(tiny_world, tmp_path):
    for bad, match in (({"crop_mode": "zoom"}, "crop_mode"), ({"iterations": -1}, "must not be negative")):
        ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path, "alexnet-small",
                         config={**REFERENCE, **bad})
        with pytest.raises(ValueError, match=match):
            cls.transfer(_rep(), "fc8", ctx)
