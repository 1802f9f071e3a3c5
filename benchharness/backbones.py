"""AlexNet-family networks whose stages have fixed names: conv1..conv5, fc6, fc7.

Every protocol is written against these names ("freeze through conv5", "re-initialise fc6-fc7"),
so it means the same for every method. ``alexnet`` follows torchvision's layout (and loads its
state dicts); ``alexnet-small`` is the same shape of network scaled down for the embedded
64-pixel synthetic world on a CPU.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from .hookspecs import hookimpl
from .interfaces import Backbone

STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
CONV_STAGES = STAGES[:5]
FC_STAGES = STAGES[5:]


@dataclass(frozen=True)
class TrunkSpec:
    """Layer sizes of one AlexNet-family trunk."""

    channels: tuple[int, int, int, int, int]
    kernels: tuple[int, int, int, int, int]
    conv1_stride: int
    conv1_padding: int
    fc_dim: int
    input_size: int
    pool_out: int  # spatial side of conv5's pooled output at input_size
    dropout: float = 0.5  # before fc6 and fc7, as in AlexNet


def _conv_stage(cin, cout, kernel, stride, padding, pool):
    layers = OrderedDict(conv=nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding),
                         relu=nn.ReLU(inplace=True))
    if pool:
        layers["pool"] = nn.MaxPool2d(kernel_size=3, stride=2)
    return nn.Sequential(layers)


def _fc_stage(cin, cout, dropout):
    return nn.Sequential(OrderedDict(dropout=nn.Dropout(dropout), fc=nn.Linear(cin, cout),
                                     relu=nn.ReLU(inplace=True)))


class AlexNetTrunk(nn.Module):
    """conv1..conv5 then fc6, fc7; ``forward`` returns fc7's activations.

    ``forward_to(x, stage)`` stops after the named stage; ``forward_from(h, stage)`` continues
    from the output of the named stage. Between conv5 and fc6 sits an adaptive pool to
    ``pool_out`` x ``pool_out`` and a flatten, as in torchvision's AlexNet.
    """

    def __init__(self, spec: TrunkSpec, in_channels: int = 3):
        super().__init__()
        self.spec = spec
        c, k = spec.channels, spec.kernels
        self.conv1 = _conv_stage(in_channels, c[0], k[0], spec.conv1_stride, spec.conv1_padding, True)
        self.conv2 = _conv_stage(c[0], c[1], k[1], 1, k[1] // 2, True)
        self.conv3 = _conv_stage(c[1], c[2], k[2], 1, k[2] // 2, False)
        self.conv4 = _conv_stage(c[2], c[3], k[3], 1, k[3] // 2, False)
        self.conv5 = _conv_stage(c[3], c[4], k[4], 1, k[4] // 2, True)
        self.avgpool = nn.AdaptiveAvgPool2d(spec.pool_out)
        self.fc6 = _fc_stage(c[4] * spec.pool_out * spec.pool_out, spec.fc_dim, spec.dropout)
        self.fc7 = _fc_stage(spec.fc_dim, spec.fc_dim, spec.dropout)
        self.reset_parameters()

    @property
    def out_dim(self) -> int:
        return self.spec.fc_dim

    @property
    def conv5_channels(self) -> int:
        return self.spec.channels[4]

    def stage(self, name: str) -> nn.Module:
        """The module of one stage, by its fixed name."""
        if name not in STAGES:
            raise KeyError(f"unknown stage {name!r}; stages are {STAGES}")
        return getattr(self, name)

    def reset_parameters(self, stages=STAGES, generator: torch.Generator | None = None):
        """Re-initialise the named stages (Gaussian weights, constant biases, as in Caffe)."""
        for name in stages:
            for m in self.stage(name).modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    fan_in = m.weight[0].numel()
                    std = (2.0 / fan_in) ** 0.5  # He init: keeps deep random nets from vanishing
                    with torch.no_grad():
                        m.weight.normal_(0.0, std, generator=generator)
                        m.bias.fill_(0.1 if name != "conv1" else 0.0)

    def forward_to(self, x: torch.Tensor, last: str = "fc7") -> torch.Tensor:
        """Run from the input through stage ``last`` (inclusive)."""
        for name in STAGES:
            if name == "fc6":
                x = torch.flatten(self.avgpool(x), 1)
            x = getattr(self, name)(x)
            if name == last:
                return x
        raise KeyError(last)

    def forward_from(self, h: torch.Tensor, after: str) -> torch.Tensor:
        """Continue from the output of stage ``after`` through fc7."""
        start = STAGES.index(after) + 1
        for name in STAGES[start:]:
            if name == "fc6":
                h = torch.flatten(self.avgpool(h), 1)
            h = getattr(self, name)(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_to(x, "fc7")


ALEXNET = TrunkSpec(channels=(64, 192, 384, 256, 256), kernels=(11, 5, 3, 3, 3), conv1_stride=4,
                    conv1_padding=2, fc_dim=4096, input_size=227, pool_out=6)
# No dropout: with 256-unit fc layers, AlexNet's p=0.5 keeps fc6-fc7 trained from scratch from
# learning at all (they collapse to constant outputs on the small world).
ALEXNET_SMALL = TrunkSpec(channels=(32, 64, 96, 96, 64), kernels=(5, 5, 3, 3, 3), conv1_stride=2,
                          conv1_padding=2, fc_dim=256, input_size=64, pool_out=3, dropout=0.0)

# torchvision.models.alexnet's state-dict keys -> our stage names
TORCHVISION_KEYS = {
    "features.0": "conv1.conv", "features.3": "conv2.conv", "features.6": "conv3.conv",
    "features.8": "conv4.conv", "features.10": "conv5.conv",
    "classifier.1": "fc6.fc", "classifier.4": "fc7.fc",
}


def from_torchvision_keys(state: dict) -> tuple[dict, list[str]]:
    """Rename a torchvision AlexNet state dict to stage names; returns (renamed, ignored keys).

    ``classifier.6`` (the ImageNet fc8) is ignored: every task trains its own classifier.
    """
    renamed, ignored = {}, []
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in TORCHVISION_KEYS:
            renamed[f"{TORCHVISION_KEYS[prefix]}.{leaf}"] = value
        else:
            ignored.append(key)
    return renamed, ignored


def build(name: str, in_channels: int = 3) -> AlexNetTrunk:
    """A fresh trunk of the named built-in backbone."""
    specs = {"alexnet": ALEXNET, "alexnet-small": ALEXNET_SMALL}
    if name not in specs:
        raise KeyError(f"unknown backbone {name!r}; built-in backbones are {sorted(specs)}")
    return AlexNetTrunk(specs[name], in_channels=in_channels)


@hookimpl
def benchharness_backbones():
    """The two built-in AlexNet-family backbones."""
    return [
        Backbone("alexnet", lambda in_channels=3: build("alexnet", in_channels), ALEXNET.input_size,
                 "AlexNet in torchvision's layout (227-pixel input), for the real VOC suite"),
        Backbone("alexnet-small", lambda in_channels=3: build("alexnet-small", in_channels), ALEXNET_SMALL.input_size,
                 "AlexNet scaled down (64-pixel input, 256-d fc) for the embedded synthetic world"),
    ]
