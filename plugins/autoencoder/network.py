"""The autoencoder's network: the encoder (the AlexNet trunk through fc7 and a linear map to a
code ``z``, BiGAN's encoder E) and an up-convolutional decoder (DCGAN-generator-shaped, as
BiGAN's G) from ``z`` back to the image; and the reconstruction loss."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LOSSES = ("l2", "l1")


def reconstruction_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean over pixels and channels of the squared (``l2``) or absolute (``l1``) error."""
    if kind == "l2":
        return F.mse_loss(prediction, target)
    if kind == "l1":
        return F.l1_loss(prediction, target)
    raise ValueError(f"autoencoder: loss must be one of {LOSSES}, not {kind!r}")


class Decoder(nn.Module):
    """``z`` -> 4x4 map -> (transposed conv 4x4 stride 2, batch norm, ReLU) up to half of
    ``size`` -> a last transposed conv to ``size`` and tanh (the [-1, 1] input scale).
    ``size`` is a power of two >= 8; widths double from ``channels`` towards the 4x4 start."""

    def __init__(self, z_dim: int, size: int, channels: int):
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"autoencoder: decoder_size must be a power of two >= 8, got {size}")
        n = int(math.log2(size // 4))
        widths = [channels * 2 ** (n - 1 - i) for i in range(n)]  # e.g. 128, 64, 32, 16 for 64 px
        layers = [nn.ConvTranspose2d(z_dim, widths[0], 4, 1, 0, bias=False),
                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class Autoencoder(nn.Module):
    """Encoder (the trunk through fc7, ReLU'd as every task reads it, then a linear map to
    ``z``) and :class:`Decoder`: an image of ``decoder_size`` pixels from one of the trunk's
    input size. The trunk is the representation."""

    def __init__(self, trunk: nn.Module, z_dim: int, decoder_size: int, decoder_channels: int):
        super().__init__()
        self.trunk = trunk
        self.to_z = nn.Linear(trunk.out_dim, z_dim)
        self.decoder = Decoder(z_dim, decoder_size, decoder_channels)
        self.decoder_size = decoder_size

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code ``z`` of images ``x``."""
        return self.to_z(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))


def to_decoder_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` resized (antialiased) to the decoder's output side: the reconstruction target."""
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
