"""FCN-32s (Long et al. 2015) on an AlexNet-family trunk.

conv1..conv5 (with conv5's pool) come from the representation; fc6 and fc7 become convolutions
whose weights are the fully connected ones reshaped (fc6: a ``pool_out`` x ``pool_out`` kernel
over conv5's pooled map, fc7: 1 x 1), so at the centre of an input of the trunk's own size the
network computes exactly the trunk's fc7. A new 1 x 1 classifier (zero-initialised, as in FCN)
scores the classes, and a learnable transposed convolution initialised to bilinear
interpolation upsamples the scores by the trunk's total stride back to the input size.

FCN pads its input by 100 pixels and crops the upsampled output; here the padding and the crop
are derived from the trunk's layer geometry (:func:`geometry`), so they are as small as the
network allows and right for any AlexNet-family trunk.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import CONV_STAGES, STAGES
from ..representation import Representation


def fc_to_conv(trunk) -> tuple[nn.Conv2d, nn.Conv2d]:
    """fc6 and fc7 of ``trunk`` as convolutions with the same weights, reshaped."""
    p = trunk.spec.pool_out
    fc6, fc7 = trunk.fc6.fc, trunk.fc7.fc
    conv6 = nn.Conv2d(trunk.conv5_channels, fc6.out_features, p)
    conv7 = nn.Conv2d(fc7.in_features, fc7.out_features, 1)
    with torch.no_grad():
        conv6.weight.copy_(fc6.weight.view(fc6.out_features, trunk.conv5_channels, p, p))
        conv6.bias.copy_(fc6.bias)
        conv7.weight.copy_(fc7.weight.view(fc7.out_features, fc7.in_features, 1, 1))
        conv7.bias.copy_(fc7.bias)
    return conv6, conv7


def bilinear_kernel(channels: int, size: int) -> torch.Tensor:
    """Weights ``[channels, channels, size, size]`` of a transposed convolution that upsamples
    each channel on its own by bilinear interpolation (FCN's ``upsample_filt``)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float32)
    filt1d = 1 - (og - center).abs() / factor
    filt = filt1d[:, None] * filt1d[None, :]
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = filt
    return weight


def _pair(v):
    return v[0] if isinstance(v, tuple) else v


def geometry(layers) -> tuple[int, float]:
    """``(stride, offset)`` such that output cell ``o`` of ``layers`` (convolutions and max
    pools, in order) is centred on input pixel ``stride * o + offset``."""
    stride, offset = 1, 0.0
    for m in layers:
        k, s, p = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
        offset += stride * ((k - 1) / 2 - p)
        stride *= s
    return stride, offset


def output_length(layers, n: int) -> int:
    """Spatial length after ``layers`` of an input of length ``n``, as PyTorch computes it:
    rounded down, or up for pools with ``ceil_mode`` (Caffe's pooling), where a last window
    that would start in the right padding is dropped."""
    for m in layers:
        k, s, p = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
        if getattr(m, "ceil_mode", False):
            out = -(-(n + 2 * p - k) // s) + 1
            if (out - 1) * s >= n + p:
                out -= 1
            n = out
        else:
            n = (n + 2 * p - k) // s + 1
    return n


class FCN32s(nn.Module):
    """FCN-32s over the representation's trunk; ``frozen_conv`` fixes conv1..conv5 (``fc6-8``),
    ``train_upsampling = False`` (the default) keeps the bilinear upsampling fixed, as FCN does
    (``upscore`` with ``lr_mult: 0``).

    ``forward(x)`` takes a batch in the representation's input convention ``[B, C, H, W]``
    (:func:`.batching.normalised_batch`) and returns class scores ``[B, n_classes, H, W]``
    aligned with the input pixels.
    """

    def __init__(self, representation: Representation, n_classes: int, frozen_conv: bool = False,
                 train_upsampling: bool = False):
        super().__init__()
        trunk = copy.deepcopy(representation.network)
        self.input = representation.input
        self.learned = tuple(representation.learned_stages)
        self.convs = nn.ModuleDict({name: trunk.stage(name) for name in CONV_STAGES})
        self.fc6, self.fc7 = fc_to_conv(trunk)
        self.drop6, self.drop7 = trunk.fc6.dropout, trunk.fc7.dropout
        self.act6, self.act7 = trunk.fc6.relu, trunk.fc7.relu  # the trunk's (leaky or not) ReLUs
        self.dropout_after = trunk.spec.dropout_after  # Caffe's fc -> relu -> dropout order
        self.score = nn.Conv2d(self.fc7.out_channels, n_classes, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)
        self.layers = [m for name in CONV_STAGES for m in self.convs[name].modules()
                       if isinstance(m, (nn.Conv2d, nn.MaxPool2d))] + [self.fc6, self.fc7, self.score]
        self.stride, self.offset = geometry(self.layers)
        # FCN's upscore is a full n -> n deconvolution set to per-class bilinear interpolation
        # (zero off the diagonal). Fixed, it stays so, and a depthwise one (groups = n) computes
        # the same map with 1/n of the work (half an FCN step on the CPU); trained, the off-diagonal
        # weights may learn, so it stays full.
        groups = 1 if train_upsampling else n_classes
        self.upscore = nn.ConvTranspose2d(n_classes, n_classes, 2 * self.stride, stride=self.stride,
                                          bias=False, groups=groups)
        with torch.no_grad():
            kernel = bilinear_kernel(n_classes, 2 * self.stride)
            self.upscore.weight.copy_(kernel if groups == 1 else kernel[range(n_classes), range(n_classes)][:, None])
        self.upscore.weight.requires_grad_(train_upsampling)
        # upsampled pixel j is centred on padded-input pixel j - centre + offset
        self._up_centre = (2 * self.stride - 1) / 2
        self.pad_before = max(0, math.ceil(self.offset - self._up_centre))
        self.crop = int(self._up_centre - self.offset + self.pad_before)
        self.frozen = CONV_STAGES if frozen_conv else ()
        for name in self.frozen:
            for p in self.convs[name].parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:
            self.convs[name].eval()
        return self

    def pad_after(self, n: int) -> int:
        """Padding after an input side of length ``n`` so that the upsampled output covers it."""
        q = 0
        while True:
            coarse = output_length(self.layers, n + self.pad_before + q)
            if coarse >= 1 and (coarse + 1) * self.stride >= self.crop + n:
                return q
            q += 1

    def conv5(self, x: torch.Tensor) -> torch.Tensor:
        """conv1..conv5 (with conv5's pool) of a normalised batch."""
        for name in CONV_STAGES:
            x = self.convs[name](x)
        return x

    def fully_connected(self, x: torch.Tensor) -> torch.Tensor:
        """fc6 and fc7 as convolutions over conv5's map, with the trunk's activations and
        dropout in the trunk's order (torchvision's dropout -> fc -> relu, or Caffe's
        fc -> relu -> dropout, as FCN-AlexNet's drop6 / drop7 after relu6 / relu7)."""
        if self.dropout_after:
            x = self.drop6(self.act6(self.fc6(x)))
            return self.drop7(self.act7(self.fc7(x)))
        x = self.act6(self.fc6(self.drop6(x)))
        return self.act7(self.fc7(self.drop7(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (self.pad_before, self.pad_after(w), self.pad_before, self.pad_after(h)))
        if self.frozen:
            with torch.no_grad():
                x = self.conv5(x)
        else:
            x = self.conv5(x)
        up = self.upscore(self.score(self.fully_connected(x)))
        return up[..., self.crop:self.crop + h, self.crop:self.crop + w]

    def param_groups(self, lr: float, lr_pretrained: float):
        """SGD groups: new layers (and random stages) at ``lr``, pretrained ones at ``lr_pretrained``."""
        stage_params = {name: list(self.convs[name].parameters()) for name in CONV_STAGES}
        stage_params["fc6"] = list(self.fc6.parameters())
        stage_params["fc7"] = list(self.fc7.parameters())
        pretrained = []
        new = [p for p in (*self.score.parameters(), *self.upscore.parameters()) if p.requires_grad]
        for name in STAGES:
            params = [p for p in stage_params[name] if p.requires_grad]
            (pretrained if name in self.learned else new).extend(params)
        groups = [{"params": new, "lr": lr}]
        if pretrained:
            groups.append({"params": pretrained, "lr": lr_pretrained or lr})
        return groups
