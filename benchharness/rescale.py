"""Data-dependent rescaling of a trunk (Krahenbuhl, Doersch, Donahue, Darrell 2016, section 3).

Two steps, both driven by a batch of task images:

- **within-layer** (the paper's Algorithm 1): from the bottom layer to the top, each output
  channel ``i`` of each affine layer ``k`` is divided by the standard deviation of its
  pre-activation over the batch (and spatial positions), ``W_ki <- W_ki / s_ki``,
  ``b_ki <- b_ki / s_ki``, so every channel has unit variance on the batch; with
  ``target_mean`` set, the bias also moves each channel's mean to that value
  (``b_ki <- (b_ki - m_ki) / s_ki + target_mean``). Layers are done in order because each
  normalised layer changes the input of the next. This changes the network's function (per
  channel); it is meant for random or freshly initialised layers.
- **between-layer** (the paper's "global scaling", Algorithm 2): random Gaussian gradients are
  back-propagated from the top layer's output; per affine layer ``k`` the change rate
  ``r_k = sqrt(mean(grad W_k ** 2) / mean(W_k ** 2))`` is measured, and each layer's weights
  are multiplied by ``sqrt(r_k / r)`` where ``r`` is the geometric mean of the ``r_k``, so that
  the change rates become equal. Biases are multiplied by the same factor and by the product of
  the factors of all layers below, which keeps a ReLU / max-pool network exactly homogeneous: its
  output is only multiplied by a positive constant (the argmax and the direction of every output
  vector are preserved). Like the authors' reference implementation (which moves it part of
  the way each iteration), ``r`` is further scaled by ``output_std ** (2 / n_layers)`` so that the
  top layer's output standard deviation (mean over units) becomes 1 (``normalise_output``). The random gradients are drawn once and
  reused, so for an exactly homogeneous network one step equalises the rates; the loop repeats
  until the rates agree (and the output std is 1) within 1 % or ``iterations`` are done.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .backbones import STAGES, AlexNetTrunk

CHUNK = 128  # images per forward pass, to bound memory


def stage_layer(network: AlexNetTrunk, name: str) -> nn.Module:
    """The Conv2d / Linear layer of one trunk stage."""
    return next(m for m in network.stage(name).modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def affine_layers(network: AlexNetTrunk, head: nn.Module | None = None) -> list[tuple[str, nn.Module]]:
    """The (name, Conv2d/Linear) layers of the trunk in forward order, then ``head`` if given."""
    layers = [(name, stage_layer(network, name)) for name in STAGES]
    if head is not None:
        layers.append(("head", head))
    return layers


def _forward(network: AlexNetTrunk, head: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    out = network(x)
    return head(out) if head is not None else out


@torch.no_grad()
def channel_statistics(network: AlexNetTrunk, images: torch.Tensor, layer: nn.Module,
                       head: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel mean and standard deviation of ``layer``'s pre-activation output on
    ``images`` (over images and spatial positions)."""
    sums = {}

    def hook(_module, _inputs, out):
        # runs before the in-place ReLU that follows the layer overwrites ``out``
        flat = out.detach().double().transpose(0, 1).reshape(out.shape[1], -1)
        sums["n"] = sums.get("n", 0) + flat.shape[1]
        sums["s"] = sums.get("s", 0) + flat.sum(1)
        sums["q"] = sums.get("q", 0) + (flat * flat).sum(1)

    handle = layer.register_forward_hook(hook)
    try:
        for start in range(0, len(images), CHUNK):
            _forward(network, head, images[start:start + CHUNK])
    finally:
        handle.remove()
    mean = sums["s"] / sums["n"]
    var = (sums["q"] / sums["n"] - mean * mean).clamp_min(0)
    return mean.float(), var.sqrt().float()


@torch.no_grad()
def within_layer_normalise(network: AlexNetTrunk, images: torch.Tensor, head: nn.Module | None = None,
                           target_mean: float | None = None, eps: float = 1e-6) -> dict:
    """Algorithm 1: unit variance (and optionally ``target_mean``) for every output channel of
    every layer, bottom to top. Channels with (near) zero variance on the batch are left as they
    are. Returns per-layer summaries of the factors applied."""
    stats = {}
    for name, layer in affine_layers(network, head):
        mean, std = channel_statistics(network, images, layer, head)
        dead = std <= eps
        scale = torch.where(dead, torch.ones_like(std), 1.0 / std.clamp_min(eps))
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        layer.weight.mul_(scale.view(shape).to(layer.weight))
        if target_mean is None:
            layer.bias.mul_(scale.to(layer.bias))
        else:
            shifted = (layer.bias - mean.to(layer.bias)) * scale.to(layer.bias) + target_mean
            layer.bias.copy_(torch.where(dead.to(layer.bias.device), layer.bias, shifted))
        stats[name] = {"scale_min": scale.min().item(), "scale_median": scale.median().item(),
                       "scale_max": scale.max().item(), "dead_channels": int(dead.sum())}
    return stats


def change_rates(network: AlexNetTrunk, images: torch.Tensor, head: nn.Module | None = None,
                 generator: torch.Generator | None = None,
                 targets: list[torch.Tensor] | None = None) -> tuple[dict[str, float], float]:
    """Per-layer ``sqrt(mean(grad W ** 2) / mean(W ** 2))`` for random Gaussian gradients at the
    top output, and the mean per-unit standard deviation of that output on ``images``.

    ``targets`` holds the random gradients, one tensor per chunk of images; when it is an empty
    list it is filled (from ``generator``) so that later calls reuse the same draws.
    """
    targets = [] if targets is None else targets
    layers = affine_layers(network, head)
    weights = [layer.weight for _, layer in layers]
    flags = [w.requires_grad for w in weights]
    grads = [torch.zeros_like(w) for w in weights]
    out_sum = out_sq = 0.0
    n = 0
    try:
        for w in weights:
            w.requires_grad_(True)
        for start in range(0, len(images), CHUNK):
            out = _forward(network, head, images[start:start + CHUNK])
            chunk = start // CHUNK
            if len(targets) <= chunk:
                targets.append(torch.randn(out.shape, generator=generator))
            target = targets[chunk].to(out)
            for acc, g in zip(grads, torch.autograd.grad(out, weights, target)):
                acc += g
            with torch.no_grad():
                flat = out.detach().double().transpose(0, 1).reshape(out.shape[1], -1)
                out_sum = out_sum + flat.sum(1)
                out_sq = out_sq + (flat * flat).sum(1)
                n += flat.shape[1]
    finally:
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)
    rates = {name: math.sqrt(g.pow(2).mean().item() / max(w.detach().pow(2).mean().item(), 1e-30))
             for (name, _), g, w in zip(layers, grads, weights)}
    mean = out_sum / n
    output_std = (out_sq / n - mean * mean).clamp_min(0).sqrt().mean().item()
    return rates, output_std


@torch.no_grad()
def _scale_layers(layers, factors: list[float]) -> None:
    below = 1.0  # product of the factors of the layers below: the scale of this layer's input
    for (_, layer), s in zip(layers, factors):
        layer.weight.mul_(s)
        layer.bias.mul_(s * below)
        below *= s


def between_layer_scale(network: AlexNetTrunk, images: torch.Tensor, head: nn.Module | None = None,
                        iterations: int = 10, generator: torch.Generator | None = None,
                        normalise_output: bool = True, tolerance: float = 0.01) -> dict:
    """Algorithm 2 (global scaling): equalise the layers' gradient-to-weight ratios by positive
    per-layer factors that change the output only by a positive constant. Returns the rates
    before and after, the total factor per layer and the number of iterations run."""
    layers = affine_layers(network, head)
    targets: list[torch.Tensor] = []  # one draw of random gradients, reused by every iteration
    rates, output_std = change_rates(network, images, head, generator, targets)
    before = dict(rates)
    total = {name: 1.0 for name, _ in layers}
    done = 0
    for _ in range(iterations):
        logs = [math.log(r) for r in rates.values()]
        spread = max(logs) - min(logs)
        if spread < tolerance and (not normalise_output or abs(math.log(output_std)) < tolerance):
            break
        log_target = sum(logs) / len(logs)
        if normalise_output and output_std > 0:
            # the factors multiply the output by exp(sum(log r_k - log_target) / 2): this
            # makes that product 1 / output_std, so the output std becomes 1
            log_target += 2 * math.log(output_std) / len(logs)
        factors = [math.exp(0.5 * (lr - log_target)) for lr in logs]
        _scale_layers(layers, factors)
        for (name, _), f in zip(layers, factors):
            total[name] *= f
        rates, output_std = change_rates(network, images, head, generator, targets)
        done += 1
    return {"rates_before": before, "rates_after": rates, "scales": total,
            "output_scale": math.prod(total.values()), "output_std": output_std,
            "iterations": done}


def rescale_trunk(network: AlexNetTrunk, images: torch.Tensor, *, within_layer: bool = True,
                  between_layer: bool = True, iterations: int = 10,
                  generator: torch.Generator | None = None, head: nn.Module | None = None,
                  target_mean: float | None = None, normalise_output: bool = True) -> dict:
    """Rescale ``network`` (and ``head``, an optional classifier on fc7) in place from ``images``.

    ``images`` is already-normalised network input ``[N, C, H, W]`` on the network's device
    (a few hundred task images are plenty). The network is run in eval mode (no dropout) and
    left in the mode it was in. ``generator`` seeds the random gradients of the between-layer
    step. Returns JSON-friendly statistics: ``within_layer`` (per-layer factor summaries) and
    ``between_layer`` (change rates before/after, per-layer factors, iterations).
    """
    if len(images) < 2:
        raise ValueError("rescale_trunk needs at least 2 images to estimate statistics")
    modules = [network] + ([head] if head is not None else [])
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        stats: dict = {"images": len(images)}
        if within_layer:
            stats["within_layer"] = within_layer_normalise(network, images, head, target_mean)
        if between_layer:
            stats["between_layer"] = between_layer_scale(network, images, head, iterations,
                                                         generator, normalise_output)
        return stats
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)
