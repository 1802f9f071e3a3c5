"""The networks of the BiGAN family (``bigan`` and its GAN baselines ``bigan-d``, ``bigan-lr``,
``bigan-jlr``): the encoder (the AlexNet trunk and a linear map, with batch norm while it trains,
folded in at the end), the DCGAN generator, BiGAN's joint discriminator and the trunk
discriminator of the standard GAN; the prior and the resizing to G's resolution."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from benchharness.backbones import STAGES
from benchharness.dcgan import DCGANGenerator, levels
from benchharness.rescale import stage_layer


class Encoder(nn.Module):
    """The trunk through fc7 (ReLU'd, as every task reads it) and a linear map to ``z``.

    With ``batch_norm`` (as the paper's AlexNet encoder: batch normalisation after every layer
    but the first), a BatchNorm follows the conv / fc layer of conv2..fc7 during pretraining,
    attached by forward hooks so the trunk itself keeps its plain AlexNet layout;
    :meth:`fold_batch_norm` merges their global statistics and affine parameters into the
    layers' weights and biases at the end, which leaves E's eval-mode function unchanged.
    """

    def __init__(self, trunk: nn.Module, z_dim: int, batch_norm: bool = False):
        super().__init__()
        self.trunk = trunk
        self.to_z = nn.Linear(trunk.out_dim, z_dim)
        nn.init.normal_(self.to_z.weight, std=0.01)
        nn.init.zeros_(self.to_z.bias)
        self.norms = nn.ModuleDict()
        self._hooks = []
        if batch_norm:
            for stage in STAGES[1:]:
                layer = stage_layer(trunk, stage)
                width = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
                norm = (nn.BatchNorm2d if isinstance(layer, nn.Conv2d) else nn.BatchNorm1d)(width)
                self.norms[stage] = norm
                self._hooks.append(layer.register_forward_hook(
                    lambda _module, _inputs, out, norm=norm: norm(out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_z(self.trunk(x))

    @torch.no_grad()
    def match_codes(self, x: torch.Tensor, target: torch.Tensor, eps: float = 1e-4) -> None:
        """Refit the map to ``z`` (an affine change of it) so that the codes of ``x`` get the mean
        and covariance of ``target`` codes [N, d]: whiten E(x), then colour it with ``target``'s
        covariance. Only the first two moments of ``target`` are used, not its pairing with x."""
        def moments(codes):
            codes = codes.double()
            mean = codes.mean(0)
            cov = torch.cov(codes.T).reshape(codes.shape[1], codes.shape[1])
            return mean, cov + eps * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(len(cov), dtype=cov.dtype)

        def power(cov, exponent):
            values, vectors = torch.linalg.eigh(cov)
            return vectors @ torch.diag(values.clamp_min(1e-12) ** exponent) @ vectors.T

        mean_u, cov_u = moments(self(x))
        mean_t, cov_t = moments(target)
        w = (power(cov_t, 0.5) @ power(cov_u, -0.5)).to(self.to_z.weight)
        shift = (mean_t.to(w) - w @ mean_u.to(w))
        self.to_z.weight.copy_(w @ self.to_z.weight)
        self.to_z.bias.copy_(w @ self.to_z.bias + shift)

    @torch.no_grad()
    def fold_batch_norm(self) -> None:
        """Merge every BatchNorm (its running statistics, scale and shift) into the layer before
        it and detach it: W <- W g / s, b <- (b - m) g / s + beta with s = sqrt(var + eps)."""
        for stage, norm in self.norms.items():
            layer = stage_layer(self.trunk, stage)
            factor = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            layer.weight.mul_(factor.view(-1, *([1] * (layer.weight.dim() - 1))))
            layer.bias.copy_((layer.bias - norm.running_mean) * factor + norm.bias)
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self.norms = nn.ModuleDict()

    @torch.no_grad()
    def init_to_prior(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation of the map to ``z``: on the batch ``x`` every output
        gets mean 0 and the standard deviation of the uniform prior on [-1, 1] (1 / sqrt(3)).

        With a small random map instead, E(x) starts near 0 while prior samples fill the cube, so
        D tells real from fake pairs by the size of z alone and E's first updates are spent
        blowing up the trunk's scale (killing fc units) rather than encoding x.
        """
        h = self.trunk(x)
        out = self.to_z(h)
        scale = (1 / math.sqrt(3)) / out.std(0).clamp_min(1e-6)
        self.to_z.weight.mul_(scale[:, None])
        self.to_z.bias.copy_(-(out.mean(0) - self.to_z.bias) * scale)


class Generator(DCGANGenerator):
    """DCGAN generator: z -> 4x4 map -> (transposed conv, batch norm, ReLU) x n -> tanh image,
    its transposed convolutions drawn from N(0, 0.02) as DCGAN's."""

    def __init__(self, z_dim: int, size: int, channels: int):
        super().__init__(z_dim, size, channels, init_std=0.02)


class JointDiscriminator(nn.Module):
    """D(x, z): strided convs on x down to 4x4, then linear layers each fed ``[h, z]``."""

    def __init__(self, z_dim: int, size: int, channels: int, hidden: int, dropout: float):
        super().__init__()
        convs, cin = [], 3
        for i in range(levels(size)):
            cout = channels * 2 ** i
            convs += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.x_path = nn.Sequential(*convs, nn.Flatten())
        self.joint = nn.ModuleList([nn.Linear(cin * 16 + z_dim, hidden),
                                    nn.Linear(hidden + z_dim, hidden),
                                    nn.Linear(hidden + z_dim, 1)])
        self.dropout = nn.Dropout(dropout)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.x_path(x)
        for i, layer in enumerate(self.joint):
            h = layer(torch.cat([h, z], dim=1))
            if i < len(self.joint) - 1:
                h = self.dropout(F.leaky_relu(h, 0.2))
        return h.squeeze(1)


def to_generator_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` (encoder input) resized to G's resolution, antialiased (identity when equal)."""
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def sample_z(n: int, z_dim: int, generator: torch.Generator) -> torch.Tensor:
    """Prior samples, uniform in [-1, 1]^z_dim."""
    return torch.rand(n, z_dim, generator=generator) * 2 - 1


class TrunkDiscriminator(Encoder):
    """A standard GAN's discriminator D(x) whose image pathway is the trunk through fc7: the
    encoder's layout (trunk, optional batch norm folded in at the end) with one real/fake logit
    in place of the code. Its trunk is the ``bigan-d`` representation."""

    def __init__(self, trunk: nn.Module, batch_norm: bool = False):
        super().__init__(trunk, 1, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).squeeze(1)
