"""The autoencoder's network: the encoder (the AlexNet trunk through fc7 and a linear map to a
code ``z``, BiGAN's encoder E) and an up-convolutional decoder (DCGAN-generator-shaped, as
BiGAN's G) from ``z`` back to the image; and the reconstruction loss."""

from __future__ import annotations


import torch
from torch import nn
from torch.nn import functional as F

from benchharness.dcgan import DCGANGenerator

LOSSES = ("l2", "l1")


def reconstruction_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean over pixels and channels of the squared (``l2``) or absolute (``l1``) error."""
    if kind == "l2":
        return F.mse_loss(prediction, target)
    if kind == "l1":
        return F.l1_loss(prediction, target)
    raise ValueError(f"autoencoder: loss must be one of {LOSSES}, not {kind!r}")


class Decoder(DCGANGenerator):
    """The DCGAN generator's shape (:class:`~benchharness.dcgan.DCGANGenerator`, torch's default
    initialisation) from ``z`` to an image of ``size`` pixels, a power of two >= 8."""

    def __init__(self, z_dim: int, size: int, channels: int):
        if size < 8 or size & (size - 1):
            raise ValueError(f"autoencoder: decoder_size must be a power of two >= 8, got {size}")
        super().__init__(z_dim, size, channels)


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
