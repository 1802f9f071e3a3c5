"""``run --rescale``: Krahenbuhl, Doersch, Donahue & Darrell's data-dependent initialisation
(ICLR 2016), as their published tool runs it (philkr/magic_init ``magic_init.py`` with its
defaults ``-t elwise -b 0.1 -nit 10 -bs 16`` and ``-cs``).

The tool does two things to a network whose parameter layers run in forward order, the top one
being the classifier fc8 (loss layers stripped):

1. **Initialise the layers that have no weights** (``magicInitialize``; the tool initialises
   every layer whose weights are all zero, which here means every stage the method did not learn,
   ``Representation.learned_stages``, and fc8). Bottom to top, each such layer gets weights
   N(0, 1) and zero bias, is run on the images (through the layers below, already done), and then
   per output channel its weights are divided by the standard deviation ``s`` of its
   pre-activation over images and positions, and its bias set to ``-m / s + 0.1`` (``m`` the
   mean). Every new channel then has std 1 and mean 0.1 on the images. Learned layers are left
   as they are.
2. **Equalise the layers' change rates** (``calibrateGradientRatio``, ``-cs``), over all layers:
   on one batch, random N(0, 1) gradients are set on fc8's output and back-propagated; per layer
   ``r_k = sqrt(mean(dW_k ** 2) / mean(W_k ** 2))``; the target is the geometric mean of the
   ``r_k`` times ``output_std ** (1 / n_layers)`` (fc8's output std, mean over units). The loop
   stops when every ``|log r_k / log target - 1| < 0.01``; otherwise, bottom to top in one forward
   pass, each layer first multiplies its bias by how much the mean absolute value of its input
   changed since it was last measured (this carries the scaling of the layers below into the
   bias), then multiplies weights and bias by ``sqrt(r_k / target)``. At most 10 rounds, fresh
   random gradients each round. Directions never change, only scales.

Images, as the tool's ``-d`` option reads them: whole images resized to the network's input side
(no crop, no mirror), in the network's input convention; 10 x 16 = 160 images for step 1 and one
batch of 16 for step 2.

Where this differs from the tool, and why:

- fc8 is a temporary 1000-way layer (the CaffeNet deploy prototxt's fc8, the top of the net the
  tool calibrates). Every task then throws it away and builds its own head, as the reference
  pipelines do (voc-classification re-draws ``fc8_cls``, Fast R-CNN and FCN add new layers).
- The network runs without dropout. The tool builds its net in Caffe's TRAIN phase, so a
  prototxt with drop6/drop7 would have them active ("Use 'Dropout' at your own risk", its
  comment says); statistics of the network a task evaluates are deterministic this way.
- A channel whose pre-activation has (near) zero variance on the images is left unscaled, where
  the tool would divide by zero.
- Of the tool's types ``elwise`` (its default, the one ``run --rescale`` uses) and ``kmeans``
  (:mod:`benchharness.patch_kmeans`, the ``kmeans`` method's initialisation) are implemented,
  not ``pca`` / ``zca`` / ``rand``; ``initialise_layers`` takes a type per layer.
- One fixed seed draws the images and the random numbers, so a representation is rescaled the
  same way in every job (as a released rescaled model is one file), and cached features stay valid.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Sequence

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from .backbones import STAGES, AlexNetTrunk
from .patch_kmeans import kmeans_filters, layer_patches

INIT_BIAS = 0.1  # magic_init.py -b default
INIT_IMAGES = 160  # -nit 10 batches x -bs 16
CALIBRATION_IMAGES = 16  # calibrateGradientRatio runs on one batch (NIT=1) of -bs 16
HEAD_OUTPUTS = 1000  # fc8 of the CaffeNet deploy prototxt
MAX_ROUNDS = 10  # calibrateGradientRatio: for it in range(10)
TOLERANCE = 0.01  # stop when every |log r / log target - 1| < 1 %
DRIFT_WARNING = 0.25  # the tool warns when the output std moves by more than e^0.25
SEED = 0
CHUNK = 128  # images per forward pass, to bound memory


def stage_layer(network: AlexNetTrunk, name: str) -> nn.Module:
    """The Conv2d / Linear layer of one trunk stage."""
    return next(m for m in network.stage(name).modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def parameter_layers(network: AlexNetTrunk, head: nn.Module | None = None) -> list[tuple[str, nn.Module]]:
    """The (name, Conv2d/Linear) layers of the trunk in forward order, then ``("fc8", head)``."""
    layers = [(name, stage_layer(network, name)) for name in STAGES]
    if head is not None:
        layers.append(("fc8", head))
    return layers


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has run."""


def _forward(network: AlexNetTrunk, head: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    out = network(x)
    return head(out) if head is not None else out


def _flat(out: torch.Tensor) -> torch.Tensor:
    """[N, C, ...] -> [C, N * ...] in float64 (the tool's flattenData, transposed)."""
    return out.detach().double().transpose(0, 1).reshape(out.shape[1], -1)


@torch.no_grad()
def channel_statistics(network: AlexNetTrunk, images: torch.Tensor, layer: nn.Module,
                       head: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel mean and (population) standard deviation of ``layer``'s
    pre-activation output on ``images``, over images and spatial positions. The forward pass
    stops at ``layer``."""
    sums: dict = {}

    def hook(_module, _inputs, out):
        flat = _flat(out)  # before the in-place ReLU that follows overwrites ``out``
        sums["n"] = sums.get("n", 0) + flat.shape[1]
        sums["s"] = sums.get("s", 0) + flat.sum(1)
        sums["q"] = sums.get("q", 0) + (flat * flat).sum(1)
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        for start in range(0, len(images), CHUNK):
            try:
                _forward(network, head, images[start:start + CHUNK])
            except _Stop:
                pass
    finally:
        handle.remove()
    mean = sums["s"] / sums["n"]
    var = (sums["q"] / sums["n"] - mean * mean).clamp_min(0)
    return mean.float(), var.sqrt().float()


INIT_TYPES = ("elwise", "kmeans")
PATCHES_PER_IMAGE = 128  # kmeans: receptive-field windows sampled from each image's layer input


@torch.no_grad()
def layer_input_patches(network: AlexNetTrunk, images: torch.Tensor, layer: nn.Module,
                        head: nn.Module | None = None, per_image: int = PATCHES_PER_IMAGE,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Random receptive-field windows of ``layer``'s input on ``images`` (through the layers
    below as they are now), rows [n, d] in float64 on the CPU; the forward pass stops there."""
    rows = []

    def hook(_module, inputs):
        rows.append(layer_patches(inputs[0].detach(), layer, per_image, generator).double().cpu())
        raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    try:
        for start in range(0, len(images), CHUNK):
            try:
                _forward(network, head, images[start:start + CHUNK])
            except _Stop:
                pass
    finally:
        handle.remove()
    return torch.cat(rows)


def _kmeans_weight(network, images, layer, head, generator, seed: int, per_image: int) -> dict:
    """Set ``layer``'s weight to the k-means filters of its input patches, group by group;
    returns what was done (the tool falls back to ``elwise`` with fewer patches than filters)."""
    patches = layer_input_patches(network, images, layer, head, per_image, generator)
    groups = getattr(layer, "groups", 1)
    out_per_group = layer.weight.shape[0] // groups
    if len(patches) < out_per_group:
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
        return {"type": "elwise", "reason": f"{len(patches)} patches < {out_per_group} filters"}
    width = patches.shape[1] // groups
    for g in range(groups):
        found = kmeans_filters(patches[:, g * width:(g + 1) * width].numpy(), out_per_group, seed + g)
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        layer.weight[rows] = torch.from_numpy(found.filters).view_as(layer.weight[rows]).to(layer.weight)
    return {"type": "kmeans", "patches": len(patches), "patch_dim": width, "groups": groups}


@torch.no_grad()
def initialise_layers(network: AlexNetTrunk, images: torch.Tensor, names: Sequence[str],
                      head: nn.Module | None = None, bias: float = INIT_BIAS,
                      generator: torch.Generator | None = None, eps: float = 1e-8,
                      types: dict[str, str] | None = None, seed: int = SEED,
                      per_image: int = PATCHES_PER_IMAGE) -> dict:
    """Step 1 (``magicInitialize``) for the layers ``names``, bottom to top: weights of the
    layer's type (``types[name]``, ``elwise`` unless given: N(0, 1); ``kmeans``: the k-means
    filters of its input patches, :mod:`benchharness.patch_kmeans`, ``seed`` + the group for
    scikit-learn), then per output channel std 1 and mean ``bias`` on ``images``. Other layers
    are not touched. Returns per initialised layer the spread of the factors applied, the
    number of dead (constant) channels and, for ``kmeans``, the patches it used."""
    types = types or {}
    stats = {}
    for name, layer in parameter_layers(network, head):
        if name not in names:
            continue
        kind = types.get(name, "elwise")
        if kind not in INIT_TYPES:
            raise ValueError(f"layer {name}: unknown initialisation type {kind!r}; known: {INIT_TYPES}")
        layer.bias.zero_()
        done = {"type": "elwise"}
        if kind == "kmeans":
            done = _kmeans_weight(network, images, layer, head, generator, seed, per_image)
        else:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
        mean, std = channel_statistics(network, images, layer, head)
        dead = std <= eps
        scale = torch.where(dead, torch.ones_like(std), 1.0 / std.clamp_min(eps))
        layer.weight.mul_(scale.view((-1,) + (1,) * (layer.weight.dim() - 1)).to(layer.weight))
        layer.bias.copy_(torch.where(dead, torch.full_like(mean, bias), bias - mean * scale).to(layer.bias))
        stats[name] = {**done, "std_min": std.min().item(), "std_median": std.median().item(),
                       "std_max": std.max().item(), "dead_channels": int(dead.sum())}
    return stats


def change_rates(network: AlexNetTrunk, head: nn.Module, images: torch.Tensor,
                 generator: torch.Generator | None = None) -> dict[str, float]:
    """Per layer ``sqrt(mean(dW ** 2) / mean(W ** 2))`` for random N(0, 1) gradients on the
    head's output (one fresh draw per call)."""
    layers = parameter_layers(network, head)
    weights = [layer.weight for _, layer in layers]
    flags = [w.requires_grad for w in weights]
    grads = [torch.zeros_like(w) for w in weights]
    try:
        for w in weights:
            w.requires_grad_(True)
        for start in range(0, len(images), CHUNK):
            out = _forward(network, head, images[start:start + CHUNK])
            diff = torch.randn(out.shape, generator=generator).to(out)
            for acc, g in zip(grads, torch.autograd.grad(out, weights, diff)):
                acc += g
    finally:
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)
    return {name: math.sqrt(g.double().pow(2).mean().item()
                            / max(w.detach().double().pow(2).mean().item(), 1e-300))
            for (name, _), g, w in zip(layers, grads, weights)}


@torch.no_grad()
def _forward_scaled(network: AlexNetTrunk, head: nn.Module, images: torch.Tensor,
                    input_scale: dict[str, float], factors: dict[str, float] | None) -> float:
    """One forward pass in which every layer, just before it runs, records the mean absolute
    value of its input in ``input_scale`` and, with ``factors``, first multiplies its bias by
    the change of that value since the last pass and then weights and bias by its factor.
    Returns the head output's standard deviation (mean over units). ``images`` is one batch."""
    handles = []
    for name, layer in parameter_layers(network, head):
        def pre_hook(module, inputs, name=name):
            current = inputs[0].abs().double().mean().item()
            if factors is not None:
                module.bias.mul_(current / input_scale[name])
                module.weight.mul_(factors[name])
                module.bias.mul_(factors[name])
            input_scale[name] = current
        handles.append(layer.register_forward_pre_hook(pre_hook))
    try:
        out = _forward(network, head, images)
    finally:
        for h in handles:
            h.remove()
    return _flat(out).std(1, unbiased=False).mean().item()


def calibrate_gradient_ratio(network: AlexNetTrunk, head: nn.Module, images: torch.Tensor,
                             generator: torch.Generator | None = None, rounds: int = MAX_ROUNDS,
                             tolerance: float = TOLERANCE) -> dict:
    """Step 2 (``calibrateGradientRatio``) on one batch ``images``: rescale every layer so that
    the change rates become equal. Returns the rates of the first and of the last measured
    round, the total factor per layer, the rounds that changed the weights, the output std
    before and after and how often it drifted by more than e^0.25 in one round."""
    layers = parameter_layers(network, head)
    input_scale: dict[str, float] = {}
    output_std = first_std = _forward_scaled(network, head, images, input_scale, None)
    total = {name: 1.0 for name, _ in layers}
    first = rates = None
    done = drifts = 0
    for _ in range(rounds):
        rates = change_rates(network, head, images, generator)
        first = first or dict(rates)
        logs = [math.log(r) for r in rates.values()]
        log_target = sum(logs) / len(logs) + math.log(output_std) / len(logs)
        if log_target != 0 and all(abs(lr / log_target - 1) < tolerance for lr in logs):
            break
        factors = {name: math.exp(0.5 * (lr - log_target)) for name, lr in zip(rates, logs)}
        new_std = _forward_scaled(network, head, images, input_scale, factors)
        for name, f in factors.items():
            total[name] *= f
        drifts += abs(math.log(new_std) - math.log(output_std)) > DRIFT_WARNING
        output_std = new_std
        done += 1
    return {"rates_before": first, "rates_last": rates, "scales": total, "rounds": done,
            "output_std_before": first_std, "output_std": output_std, "output_std_drifts": drifts}


def magic_init(network: AlexNetTrunk, images: torch.Tensor, learned_stages: Sequence[str], *,
               generator: torch.Generator | None = None, head_outputs: int = HEAD_OUTPUTS,
               calibration_images: int = CALIBRATION_IMAGES) -> dict:
    """Both steps on ``network`` in place: initialise the stages not in ``learned_stages`` (and
    a temporary fc8 of ``head_outputs`` units) on ``images``, then calibrate every layer on the
    first ``calibration_images`` of them.

    ``images`` is network input ``[N, C, H, W]`` on the network's device. The network runs in
    eval mode and is left in the mode it was in; ``requires_grad`` flags are kept. Returns
    JSON-friendly statistics.
    """
    if len(images) < 2:
        raise ValueError("rescale needs at least 2 images to estimate statistics")
    head = nn.Linear(network.out_dim, head_outputs).to(images.device)
    was_training = network.training
    network.eval()
    try:
        lacking = [name for name in STAGES if name not in learned_stages] + ["fc8"]
        init = initialise_layers(network, images, lacking, head, generator=generator)
        calib = calibrate_gradient_ratio(network, head, images[:calibration_images], generator)
    finally:
        network.train(was_training)
    return {"method": "magic_init elwise -cs (Krahenbuhl et al. 2016)", "images": len(images),
            "calibration_images": min(calibration_images, len(images)),
            "initialised": lacking, "kept": [s for s in STAGES if s in learned_stages],
            "init": init, "calibration": calib}


def resized_batch(images: Sequence[torch.Tensor] | torch.Tensor, size: int) -> torch.Tensor:
    """Whole uint8 images [3, h, w] (or a batch) resized to ``size`` x ``size``, as float RGB in
    [0, 1] (the tool's ImageData with ``new_width = new_height`` = the input side)."""
    out = [TF.resize(im, [size, size], antialias=True) if tuple(im.shape[-2:]) != (size, size) else im
           for im in images]
    return torch.stack([im.float().div(255) for im in out])


def rescaled(representation, images: Sequence[torch.Tensor] | torch.Tensor, count: int,
             device: torch.device):
    """A copy of ``representation`` whose network went through :func:`magic_init` on ``count``
    of ``images`` (uint8 [3, h, w] each, a task's training images; chosen with a fixed seed),
    and the statistics to record in the result: ``(representation, stats)``."""
    generator = torch.Generator().manual_seed(SEED)
    pick = torch.randperm(len(images), generator=generator)[:count].tolist()
    size = representation.network.spec.input_size
    chosen = [images[i] for i in pick]
    x = representation.input.normalise(resized_batch([im.cpu() for im in chosen], size)).to(device)
    network = copy.deepcopy(representation.network).to(device)
    stats = magic_init(network, x, representation.learned_stages, generator=generator)
    return dataclasses.replace(representation, network=network), stats
