"""AlexNet-family networks whose stages have fixed names: conv1..conv5, fc6, fc7.

Every protocol is written against these names ("freeze through conv5", "re-initialise fc6-fc7"),
so it means the same for every method. ``alexnet`` follows torchvision's layout (and loads its
state dicts); ``caffenet`` is the Caffe CaffeNet the published models of the AlexNet era were
trained as (grouped convolutions, LRN, max-pools that round their output size up, dropout after
fc6/fc7's ReLU); ``alexnet-small`` is the same shape of network scaled down for the embedded
64-pixel synthetic world on a CPU.

A stage's output is taken after its ReLU, with its pool and LRN where the stage has them; an fc
stage's output is after its ReLU (and after its dropout in Caffe's order, which is the identity
at test time).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from .hookspecs import hookimpl
from .interfaces import Backbone
from .mappings import dataclass_from_mapping

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
    dropout: float = 0.5  # on fc6's input and fc7's input (torchvision), or their outputs (Caffe)
    groups: tuple[int, int, int, int, int] = (1, 1, 1, 1, 1)
    paddings: tuple[int, ...] = ()  # per conv stage; () = conv1_padding, then kernel // 2
    ceil_pool: bool = False  # Caffe's max-pools round their output size up
    lrn: str = "none"  # "after_pool" (CaffeNet), "before_pool" (bvlc_alexnet) on conv1, conv2
    lrn_size: int = 5
    lrn_alpha: float = 1e-4
    lrn_beta: float = 0.75
    lrn_k: float = 1.0
    fc7_dim: int = 0  # 0: fc_dim (Wang & Gupta's tracking model has a 1024-d fc7)
    dropout_after: bool = False  # Caffe's order fc -> relu -> dropout; torchvision's is dropout first
    relu_slope: float = 0.0  # > 0: leaky ReLUs (the BiGAN encoder)
    init: str = "he"  # random weights: "he" (N(0, 2/fan_in)) or "caffe" (CaffeNet's fillers)

    def __post_init__(self):
        if self.lrn not in LRN_PLACES:
            raise ValueError(f"lrn must be one of {LRN_PLACES}, not {self.lrn!r}")
        if self.init not in ("he", "caffe"):
            raise ValueError(f"init must be 'he' or 'caffe', not {self.init!r}")

    @property
    def conv_paddings(self) -> tuple[int, ...]:
        """The padding of each conv stage."""
        return self.paddings or (self.conv1_padding, *(k // 2 for k in self.kernels[1:]))

    def to_json(self) -> dict:
        """The spec as JSON-able values (stored with a representation)."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> "TrunkSpec":
        """Inverse of :meth:`to_json`; unknown keys are an error naming them."""
        return dataclass_from_mapping(cls, raw, "trunk")


LRN_PLACES = ("none", "after_pool", "before_pool")


def _relu(slope: float) -> nn.Module:
    return nn.LeakyReLU(slope, inplace=True) if slope else nn.ReLU(inplace=True)


def _conv_stage(spec: TrunkSpec, index: int, cin: int, pool: bool):
    k = spec.kernels[index]
    layers = OrderedDict(conv=nn.Conv2d(cin, spec.channels[index], k,
                                        stride=spec.conv1_stride if index == 0 else 1,
                                        padding=spec.conv_paddings[index], groups=spec.groups[index]),
                         relu=_relu(spec.relu_slope))
    lrn = spec.lrn if index < 2 else "none"
    norm = nn.LocalResponseNorm(spec.lrn_size, spec.lrn_alpha, spec.lrn_beta, spec.lrn_k)
    if lrn == "before_pool":
        layers["norm"] = norm
    if pool:
        layers["pool"] = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=spec.ceil_pool)
    if lrn == "after_pool":
        layers["norm"] = norm
    return nn.Sequential(layers)


def _fc_stage(spec: TrunkSpec, cin: int, cout: int):
    if spec.dropout_after:
        layers = OrderedDict(fc=nn.Linear(cin, cout), relu=_relu(spec.relu_slope),
                             dropout=nn.Dropout(spec.dropout))
    else:
        layers = OrderedDict(dropout=nn.Dropout(spec.dropout), fc=nn.Linear(cin, cout),
                             relu=_relu(spec.relu_slope))
    return nn.Sequential(layers)


class AlexNetTrunk(nn.Module):
    """conv1..conv5 then fc6, fc7; ``forward`` returns fc7's activations.

    ``forward_to(x, stage)`` stops after the named stage; ``forward_from(h, stage)`` continues
    from the output of the named stage. Between conv5 and fc6 sits an adaptive pool to
    ``pool_out`` x ``pool_out`` and a flatten, as in torchvision's AlexNet.
    """

    def __init__(self, spec: TrunkSpec, in_channels: int = 3):
        super().__init__()
        self.spec = spec
        c = spec.channels
        self.in_channels = in_channels
        self.conv1 = _conv_stage(spec, 0, in_channels, True)
        self.conv2 = _conv_stage(spec, 1, c[0], True)
        self.conv3 = _conv_stage(spec, 2, c[1], False)
        self.conv4 = _conv_stage(spec, 3, c[2], False)
        self.conv5 = _conv_stage(spec, 4, c[3], True)
        self.avgpool = nn.AdaptiveAvgPool2d(spec.pool_out)
        self.fc6 = _fc_stage(spec, c[4] * spec.pool_out * spec.pool_out, spec.fc_dim)
        self.fc7 = _fc_stage(spec, spec.fc_dim, self.out_dim)
        self.reset_parameters()

    @property
    def out_dim(self) -> int:
        """Width of fc7's output."""
        return self.spec.fc7_dim or self.spec.fc_dim

    @property
    def conv5_channels(self) -> int:
        return self.spec.channels[4]

    def stage(self, name: str) -> nn.Module:
        """The module of one stage, by its fixed name."""
        if name not in STAGES:
            raise KeyError(f"unknown stage {name!r}; stages are {STAGES}")
        return getattr(self, name)

    def reset_parameters(self, stages=STAGES, generator: torch.Generator | None = None):
        """Re-initialise the named stages (Gaussian weights, constant biases, as in Caffe).

        ``init = "he"`` draws N(0, 2 / fan_in) (keeps deep random nets from vanishing) with bias
        0.1 (0 for conv1); ``init = "caffe"`` uses the fillers of Caffe's
        bvlc_reference_caffenet train_val.prototxt, made for 0-255 input: std 0.01 for the
        convolutions, 0.005 for fc6/fc7, biases 0 (conv1, conv3) or 1 (the others) -- the
        published "Gaussian" rows.
        """
        for name in stages:
            for m in self.stage(name).modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    if self.spec.init == "caffe":
                        std = 0.005 if name in FC_STAGES else 0.01
                        bias = 0.0 if name in ("conv1", "conv3") else 1.0
                    else:
                        std = (2.0 / m.weight[0].numel()) ** 0.5
                        bias = 0.1 if name != "conv1" else 0.0
                    with torch.no_grad():
                        m.weight.normal_(0.0, std, generator=generator)
                        m.bias.fill_(bias)

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
# Caffe's models/bvlc_reference_caffenet: conv1 96x11x11/4, pool1 3/2, norm1; conv2 256x5x5 pad 2
# group 2, pool2, norm2; conv3 384x3x3 pad 1; conv4 384 group 2; conv5 256 group 2, pool5; fc6,
# fc7 4096 each followed by ReLU and dropout 0.5. Pools round up (pooling_layer.cpp: ceil).
CAFFENET = TrunkSpec(channels=(96, 256, 384, 384, 256), kernels=(11, 5, 3, 3, 3), conv1_stride=4,
                     conv1_padding=0, fc_dim=4096, input_size=227, pool_out=6,
                     groups=(1, 2, 1, 2, 2), ceil_pool=True, lrn="after_pool", dropout_after=True,
                     init="caffe")
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


SPECS = {"alexnet": ALEXNET, "caffenet": CAFFENET, "alexnet-small": ALEXNET_SMALL}


def build(name: str, in_channels: int = 3, **overrides) -> AlexNetTrunk:
    """A fresh trunk of the named built-in backbone; ``overrides`` replace fields of its spec
    (a checkpoint whose file says e.g. ``lrn="before_pool"`` or a 1024-d fc7)."""
    if name not in SPECS:
        raise KeyError(f"unknown backbone {name!r}; built-in backbones are {sorted(SPECS)}")
    return AlexNetTrunk(replace(SPECS[name], **overrides), in_channels=in_channels)


@hookimpl
def benchharness_backbones():
    """The three built-in AlexNet-family backbones."""
    return [
        Backbone("alexnet", lambda in_channels=3: build("alexnet", in_channels), ALEXNET.input_size,
                 "AlexNet in torchvision's layout (227-pixel input)"),
        Backbone("caffenet", lambda in_channels=3: build("caffenet", in_channels), CAFFENET.input_size,
                 "Caffe's CaffeNet (227 px, BGR 0-255 input, groups, LRN): the published models "
                 "of Table 5.3, read from .caffemodel files; the real VOC suite's backbone"),
        Backbone("alexnet-small", lambda in_channels=3: build("alexnet-small", in_channels), ALEXNET_SMALL.input_size,
                 "AlexNet scaled down (64-pixel input, 256-d fc) for the embedded synthetic world"),
    ]
