"""The ``checkpoint`` method: safetensors, torch.save state dicts, and the refusal of pickles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from benchharness.backbones import build
from benchharness.interfaces import DataError, RunContext
from benchharness.plugins import Registry


def _ctx(arg, backbone="alexnet-small", tmp=Path(".")):
    return RunContext(torch.device("cpu"), 0, tmp, tmp, backbone, config={}, method_arg=str(arg))


@pytest.fixture(scope="module")
def checkpoint():
    return Registry().methods()["checkpoint"]


def test_torchvision_state_dict_saved_with_torch_save(tmp_path, checkpoint):
    torch.manual_seed(1)
    tv = torchvision.models.alexnet(weights=None)
    torch.save(tv.state_dict(), tmp_path / "alexnet.pth")
    rep = checkpoint.pretrain(_ctx(tmp_path / "alexnet.pth", "alexnet"))
    assert torch.equal(rep.network.conv1.conv.weight, tv.features[0].weight)
    assert torch.equal(rep.network.fc7.fc.bias, tv.classifier[4].bias)
    assert set(rep.learned_stages) == {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"}


def test_safetensors_with_stage_names_and_conv_only(tmp_path, checkpoint):
    net = build("alexnet-small")
    conv_only = {k: v for k, v in net.state_dict().items() if k.startswith("conv")}
    save_file(conv_only, str(tmp_path / "conv.safetensors"))
    rep = checkpoint.pretrain(_ctx(tmp_path / "conv.safetensors"))
    assert torch.equal(rep.network.conv5.conv.weight, net.conv5.conv.weight)
    assert rep.learned_stages == ("conv1", "conv2", "conv3", "conv4", "conv5")


def test_missing_and_misshaped_keys_are_named(tmp_path, checkpoint):
    state = build("alexnet-small").state_dict()
    del state["conv2.conv.bias"]
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(DataError, match=r"missing\.safetensors: missing key 'conv2\.conv\.bias'"):
        checkpoint.pretrain(_ctx(tmp_path / "missing.safetensors"))
    tv = torchvision.models.alexnet(weights=None).state_dict()  # full-size weights, small backbone
    torch.save(tv, tmp_path / "big.pth")
    with pytest.raises(DataError, match=r"big\.pth: key 'conv1\.conv\.weight' has shape"):
        checkpoint.pretrain(_ctx(tmp_path / "big.pth"))


class _Exploit:
    """Unpickling this would run ``os.system`` and create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused_without_running(tmp_path, checkpoint):
    marker = tmp_path / "pwned"
    torch.save({"conv1.conv.weight": _Exploit(marker)}, tmp_path / "evil.pth")
    with pytest.raises(DataError, match=r"evil\.pth: refused"):
        checkpoint.pretrain(_ctx(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path, checkpoint):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match=r"junk\.safetensors: not a readable safetensors file"):
        checkpoint.pretrain(_ctx(tmp_path / "junk.safetensors"))
    with pytest.raises(DataError, match="file not found"):
        checkpoint.pretrain(_ctx(tmp_path / "absent.pth"))


def test_unused_keys_are_reported_not_dropped(tmp_path):
    from benchharness.checkpoint_io import load_checkpoint

    tv = torchvision.models.alexnet(weights=None)
    state = {**tv.state_dict(), "extra.head.weight": torch.zeros(3)}
    torch.save(state, tmp_path / "alexnet.pth")
    rep, report = load_checkpoint(tmp_path / "alexnet.pth", "alexnet")
    assert report["unused"] == ["classifier.6.bias", "classifier.6.weight", "extra.head.weight"]
    assert rep.meta["load_report"]["unused"] == report["unused"]
