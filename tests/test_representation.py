"""The Representation's on-disk format, stage naming and torchvision compatibility."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from benchharness.backbones import STAGES, build, from_torchvision_keys
from benchharness.interfaces import DataError
from benchharness.representation import InputConvention, Representation, load_state_checked


def test_save_load_round_trip_preserves_outputs_and_metadata(tmp_path):
    torch.manual_seed(0)
    net = build("alexnet-small").eval()
    rep = Representation(net, "alexnet-small", learned_stages=("conv1", "conv2"),
                         meta={"method": "m", "group": "unsup", "config_hash": "abc",
                               "pretrain_data": "pool", "pretrain_seconds": 1.5, "device": "cpu"})
    rep.save(tmp_path / "rep")
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["representation.json",
                                                                   "weights.safetensors"]
    sidecar = json.loads((tmp_path / "rep" / "representation.json").read_text())
    assert sidecar["backbone"] == "alexnet-small"
    assert sidecar["input"]["mode"] == "rgb"
    assert sidecar["meta"]["pretrain_seconds"] == 1.5
    loaded = Representation.load(tmp_path / "rep")
    assert loaded.learned_stages == ("conv1", "conv2")
    assert loaded.meta["group"] == "unsup"
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(loaded.network.eval()(x), net(x))


def test_save_leaves_no_partial_directory_on_failure(tmp_path, monkeypatch):
    rep = Representation(build("alexnet-small"), "alexnet-small")
    import benchharness.representation as module

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(module, "save_file", boom)
    with pytest.raises(OSError):
        rep.save(tmp_path / "rep")
    assert not (tmp_path / "rep").exists()


def test_stage_names_and_partial_forward():
    net = build("alexnet-small").eval()
    x = torch.rand(3, 3, 64, 64)
    conv5 = net.forward_to(x, "conv5")
    assert conv5.shape == (3, 64, 3, 3)
    assert torch.allclose(net.forward_from(conv5, "conv5"), net(x))
    assert [n for n, _ in net.named_children() if n in STAGES] == list(STAGES)


def test_torchvision_alexnet_state_dict_maps_onto_stages():
    torch.manual_seed(0)
    tv = torchvision.models.alexnet(weights=None).eval()
    renamed, ignored = from_torchvision_keys(tv.state_dict())
    assert ignored == ["classifier.6.weight", "classifier.6.bias"]
    ours = build("alexnet").eval()
    load_state_checked(ours, renamed, "tv")
    x = torch.rand(1, 3, 227, 227)
    # torchvision's fc7 output is the input of classifier[6]
    expected = tv.classifier[:6](torch.flatten(tv.avgpool(tv.features(x)), 1))
    assert torch.allclose(ours(x), expected, atol=1e-5)


def test_load_state_checked_names_the_bad_key():
    net = build("alexnet-small")
    state = dict(net.state_dict())
    missing = {k: v for k, v in state.items() if k != "conv3.conv.weight"}
    with pytest.raises(DataError, match="missing key 'conv3.conv.weight'"):
        load_state_checked(build("alexnet-small"), missing, "w.safetensors")
    bad_shape = {**state, "fc6.fc.weight": torch.zeros(3, 3)}
    with pytest.raises(DataError, match=r"'fc6.fc.weight' has shape \(3, 3\)"):
        load_state_checked(build("alexnet-small"), bad_shape, "w.safetensors")
    nan = {**state, "conv1.conv.bias": torch.full_like(state["conv1.conv.bias"], float("nan"))}
    with pytest.raises(DataError, match="'conv1.conv.bias' contains NaN"):
        load_state_checked(build("alexnet-small"), nan, "w.safetensors")
    extra = {**state, "fc8.weight": torch.zeros(1)}
    with pytest.raises(DataError, match="unexpected key 'fc8.weight'"):
        load_state_checked(build("alexnet-small"), extra, "w.safetensors")


def test_lab_l_convention_gives_one_channel_in_lightness_units():
    conv = InputConvention("lab-l", mean=(0.0,), std=(1.0,))
    white_black = torch.stack([torch.ones(3, 2, 2), torch.zeros(3, 2, 2)])
    out = conv.normalise(white_black)
    assert out.shape == (2, 1, 2, 2)
    assert torch.allclose(out[0], torch.full((1, 2, 2), 100.0), atol=1e-3)
    assert torch.allclose(out[1], torch.zeros(1, 2, 2), atol=1e-3)
