"""The context encoder's networks (Pathak et al. 2016): encoder, channel-wise fully connected
layer, up-convolutional decoder, and the small discriminator of the adversarial loss."""

from __future__ import annotations

import math

import torch
from torch import nn


class ChannelWiseFC(nn.Module):
    """The paper's channel-wise fully connected layer: each of the m feature maps of n x n is
    fully connected to itself (an n^2 x n^2 weight per channel, m n^4 weights in all) and to no
    other map, so information moves across positions within a channel only; the 1x1 (stride 1)
    convolution that follows in :class:`ContextEncoder` then mixes the channels."""

    def __init__(self, channels: int, side: int):
        super().__init__()
        positions = side * side
        self.side = side
        self.weight = nn.Parameter(torch.randn(channels, positions, positions) / math.sqrt(positions))
        self.bias = nn.Parameter(torch.zeros(channels, positions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h != self.side or w != self.side:
            raise ValueError(f"ChannelWiseFC for {self.side} x {self.side} maps got {h} x {w}")
        flat = x.reshape(b, c, h * w)
        out = torch.einsum("bcp,cpq->bcq", flat, self.weight) + self.bias
        return out.reshape(b, c, h, w)


def _up(cin: int, cout: int, kernel: int, stride: int, padding: int, last: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, kernel, stride, padding, bias=last)]
    layers += [nn.Tanh()] if last else [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return layers


class Decoder(nn.Module):
    """Five up-convolutions (the paper's decoder) from the pool5 map of side ``start`` to an
    image of side ``size``: one stride-1 up-convolution to side ceil(size / 16), four that
    double it, batch norm and ReLU between, tanh at the end (the [-1, 1] input scale); an
    output larger than ``size`` (CaffeNet's 227 from 15 x 16 = 240) is centre-cropped."""

    def __init__(self, channels: int, start: int, size: int, width: int):
        super().__init__()
        first = math.ceil(size / 16)
        if first < start:
            raise ValueError(f"inpainting: pool5 side {start} too large for a {size}-pixel output")
        widths = [width * 8, width * 4, width * 2, width, 3]
        layers = _up(channels, widths[0], first - start + 1, 1, 0, False)
        for i, (cin, cout) in enumerate(zip(widths, widths[1:])):
            layers += _up(cin, cout, 4, 2, 1, last=i == 3)
        self.net = nn.Sequential(*layers)
        self.size = size

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.net(h)
        extra = out.shape[-1] - self.size
        if extra:
            o = extra // 2
            out = out[..., o:o + self.size, o:o + self.size]
        return out


class ContextEncoder(nn.Module):
    """Encoder (the AlexNet trunk through conv5 and its pooling, pool5), the channel-wise fully
    connected layer and a 1x1 convolution across channels, then the decoder: a whole image
    predicted from its masked version."""

    def __init__(self, trunk: nn.Module, size: int, decoder_width: int, dropout: float = 0.0):
        super().__init__()
        self.trunk = trunk
        with torch.no_grad():
            pool5 = trunk.forward_to(torch.zeros(1, trunk.in_channels, size, size), "conv5")
        channels, side = pool5.shape[1], pool5.shape[-1]
        self.channel_fc = ChannelWiseFC(channels, side)
        self.dropout = nn.Dropout(dropout)
        self.mix = nn.Conv2d(channels, channels, 1)  # the stride-1 convolution across channels
        self.decoder = Decoder(channels, side, size, decoder_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk.forward_to(x, "conv5")
        h = torch.relu(self.mix(self.dropout(torch.relu(self.channel_fc(h)))))
        return self.decoder(h)


class Discriminator(nn.Module):
    """A small DCGAN-style discriminator: strided 4x4 convolutions with leaky ReLUs down to a
    map of side at most 4, averaged, then one logit (real image or inpainted)."""

    def __init__(self, size: int, width: int):
        super().__init__()
        layers, cin, cout, side = [], 3, width, size
        while side > 4:
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            cin, cout, side = cout, cout * 2, side // 2
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.logit = nn.Linear(cin, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.features(x)).squeeze(1)
