"""The DCGAN generator (Radford et al. 2016) shared by the methods that draw images from a code:
BiGAN's G (and its GAN baselines') and the autoencoder baseline's decoder."""

from __future__ import annotations

import math

import torch
from torch import nn


def levels(size: int) -> int:
    """How many factor-2 steps separate a 4x4 map from ``size``."""
    return int(math.log2(size // 4))


class DCGANGenerator(nn.Module):
    """``z`` -> 4x4 map -> (transposed conv 4x4 stride 2, batch norm, ReLU) up to half of
    ``size`` -> a last transposed conv to ``size`` and tanh (the [-1, 1] input scale).

    ``size`` is a power of two >= 8; widths double from ``channels`` towards the 4x4 start
    (e.g. 128, 64, 32, 16 for 64 px and 16 channels). ``init_std``: the transposed convolutions'
    weights drawn from N(0, init_std) (DCGAN's 0.02), or torch's default initialisation (None).
    """

    def __init__(self, z_dim: int, size: int, channels: int, init_std: float | None = None):
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"the generator's output side must be a power of two >= 8, got {size}")
        n = levels(size)
        widths = [channels * 2 ** (n - 1 - i) for i in range(n)]
        layers = [nn.ConvTranspose2d(z_dim, widths[0], 4, 1, 0, bias=False),
                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        if init_std is not None:
            for m in self.modules():
                if isinstance(m, nn.ConvTranspose2d):
                    nn.init.normal_(m.weight, std=init_std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, size, size] in [-1, 1] from codes ``z`` [N, z_dim]."""
        return self.net(z[:, :, None, None])
