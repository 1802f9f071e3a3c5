"""voc07-cls: what each protocol trains, and the frozen-feature cache's equivalence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchharness.backbones import build
from benchharness.interfaces import RunContext
from benchharness.representation import Representation
from benchharness.tasks.classification import transfer
from benchharness.tasks.crop_bank import CropBank

FAST = {"epochs": 2, "batch_size": 16, "test_crops": 2, "train_crops": 3}


def _rep(key="rep-under-test"):
    torch.manual_seed(0)
    return Representation(build("alexnet-small"), "alexnet-small", meta={"config_hash": key})


def _ctx(world, tmp_path, **config):
    return RunContext(torch.device("cpu"), 0, world, tmp_path / "cache", "alexnet-small",
                      config={**FAST, **config})


@pytest.mark.parametrize("protocol,frozen,trained", [
    ("fc8", ["conv1", "fc6", "fc7"], []),
    ("fc6-8", ["conv1", "conv5"], ["fc6", "fc7"]),
    ("all", [], ["conv1", "conv5", "fc7"]),
])
def test_protocols_train_exactly_their_stages(tiny_world, tmp_path, protocol, frozen, trained, monkeypatch):
    import benchharness.tasks.classification as cls

    rep = _rep()
    before = {k: v.clone() for k, v in rep.network.state_dict().items()}
    seen = {}
    real_train = cls.train

    def spy(model, *args, **kwargs):
        out = real_train(model, *args, **kwargs)
        seen.update({k: v.clone() for k, v in model.trunk.state_dict().items()})
        return out

    monkeypatch.setattr(cls, "train", spy)
    out = transfer(rep, protocol, _ctx(tiny_world, tmp_path))
    for stage in frozen:
        assert torch.equal(seen[f"{stage}.conv.weight" if stage.startswith("conv") else f"{stage}.fc.weight"],
                           before[f"{stage}.conv.weight" if stage.startswith("conv") else f"{stage}.fc.weight"]), stage
    for stage in trained:
        key = f"{stage}.conv.weight" if stage.startswith("conv") else f"{stage}.fc.weight"
        assert not torch.equal(seen[key], before[key]), stage
    # the representation itself is never modified by a transfer
    assert all(torch.equal(v, before[k]) for k, v in rep.network.state_dict().items())
    assert out.predictions.scores.shape == (len(out.ground_truth.image_ids), 20)


@pytest.mark.parametrize("protocol", ["fc8", "fc6-8"])
def test_cached_and_uncached_frozen_features_agree(tiny_world, tmp_path, protocol):
    uncached = transfer(_rep(), protocol, _ctx(tiny_world, tmp_path, feature_cache=False))
    first = transfer(_rep(), protocol, _ctx(tiny_world, tmp_path))
    again = transfer(_rep(), protocol, _ctx(tiny_world, tmp_path))
    assert not uncached.info["feature_cache"]
    assert first.info["feature_cache"] and not first.info["features_from_cache"]
    assert again.info["features_from_cache"]
    np.testing.assert_allclose(first.predictions.scores, uncached.predictions.scores, atol=1e-4)
    np.testing.assert_array_equal(again.predictions.scores, first.predictions.scores)
    assert len(list((tmp_path / "cache" / "features").glob("conv5-*.safetensors"))) == 2  # train + test


def test_fc8_and_fc6_8_share_one_feature_computation(tiny_world, tmp_path, monkeypatch):
    import benchharness.tasks.classification as cls

    calls = []
    real = cls.compute_features
    monkeypatch.setattr(cls, "compute_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = transfer(_rep(), "fc6-8", _ctx(tiny_world, tmp_path))
    assert len(calls) == 2 and not first.info["features_from_cache"]  # train + test splits
    fc8 = transfer(_rep(), "fc8", _ctx(tiny_world, tmp_path))
    assert len(calls) == 2 and fc8.info["features_from_cache"]
    direct = transfer(_rep(), "fc8", _ctx(tiny_world, tmp_path / "other", feature_cache=False))
    np.testing.assert_allclose(fc8.predictions.scores, direct.predictions.scores, atol=1e-4)


def test_crop_bank_is_fixed_by_its_seed_and_stays_inside_the_image():
    a = CropBank.make(5, 4, 80, (0.25, 1.0), seed=7)
    b = CropBank.make(5, 4, 80, (0.25, 1.0), seed=7)
    c = CropBank.make(5, 4, 80, (0.25, 1.0), seed=8)
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.flips, b.flips)
    assert not torch.equal(a.boxes, c.boxes)
    assert (a.boxes >= 0).all() and (a.boxes <= 80).all()
    w, h = a.boxes[..., 2] - a.boxes[..., 0], a.boxes[..., 3] - a.boxes[..., 1]
    area = (w * h) / 80 ** 2
    assert (area <= 1 + 1e-6).all() and (w >= 4).all() and (h >= 4).all()
    assert 0.4 < area.mean() < 0.8  # area fractions drawn from [0.25, 1], a few clipped by the border


def test_decoded_images_are_cached_and_memory_mapped(tiny_world, tmp_path):
    from benchharness.data.voc.devkit import VOCDevkit, locate_devkit
    from benchharness.tasks.classification import load_split

    devkit = VOCDevkit(locate_devkit(tiny_world))
    ctx = _ctx(tiny_world, tmp_path)
    ids, labels, decoded = load_split(devkit, "2007", "test", 40, ctx)
    [cache_file] = (tmp_path / "cache" / "images").glob("*.npy")
    ids2, labels2, mapped = load_split(devkit, "2007", "test", 40, ctx)
    assert ids2 == ids and np.array_equal(labels2, labels)
    assert torch.equal(mapped, decoded)
    uncached = load_split(devkit, "2007", "test", 40, ctx, use_cache=False)[2]
    assert torch.equal(uncached, decoded)
    cache_file.write_bytes(b"torn")  # a damaged cache file is rebuilt, not trusted
    assert torch.equal(load_split(devkit, "2007", "test", 40, ctx)[2], decoded)


def test_bf16_autocast_gives_the_same_ranking_within_noise(tiny_world, tmp_path):
    fp32 = transfer(_rep(), "fc8", _ctx(tiny_world, tmp_path, feature_cache=False, amp="off"))
    bf16 = transfer(_rep(), "fc8", _ctx(tiny_world, tmp_path, feature_cache=False, amp="bf16"))
    a, b = fp32.predictions.scores, bf16.predictions.scores
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max() + 0.05
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
    assert bf16.info["peak_memory_mb"] > 0


def test_rescale_option_is_recorded_and_keeps_caches_apart(tiny_world, tmp_path):
    rep = _rep()
    before = {k: v.clone() for k, v in rep.network.state_dict().items()}
    plain = transfer(rep, "fc8", _ctx(tiny_world, tmp_path))
    rescaled = transfer(rep, "fc8", _ctx(tiny_world, tmp_path, rescale=True, rescale_images=16))
    assert plain.info["rescale"] is None
    assert set(rescaled.info["rescale"]) >= {"init", "calibration"}
    assert not rescaled.info["features_from_cache"]  # rescaled features are not the plain ones
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 4
    assert not np.allclose(plain.predictions.scores, rescaled.predictions.scores)
    assert all(torch.equal(v, before[k]) for k, v in rep.network.state_dict().items())
