"""``kmeans``: data-dependent k-means initialisation (Krahenbuhl, Doersch, Donahue & Darrell,
ICLR 2016), group ``unsup``; Table 5.3's "k-means (Krahenbuhl et al. 2016)" row.

No gradient training. Layer by layer from conv1 upward, on ``images`` whole unlabelled images
resized to the input side (the tool's ``-d`` images: ``-nit 10`` batches of ``-bs 16``):

1. each conv layer's weights are the k-means centroids (k = its number of filters) of
   whitened, unit-length receptive-field patches of its input, the output of the layers below
   as already initialised, un-whitened into filters
   (:mod:`benchharness.patch_kmeans`: ZCA on the top k components, epsilon 1e-3 of the mean
   kept eigenvalue, scikit-learn's MiniBatchKMeans);
2. within-layer scaling: every unit's pre-activation made std 1 and mean ``bias`` (0.1, the
   tool's ``-b``) on the images (:func:`benchharness.rescale.initialise_layers`);
3. fc6 and fc7 (``fc_type = "elwise"``): Gaussian N(0, 1) weights with the same within-layer
   scaling, as the paper's k-means networks (their fc layers are random; with our 160 images
   the tool's ``-t kmeans`` on fc6 would fall back to Gaussian anyway: fewer samples than
   units). ``fc_type = "kmeans"`` clusters their input vectors as the tool would;
4. between-layer scaling: the change rates of all layers equalised
   (:func:`benchharness.rescale.calibrate_gradient_ratio`, the tool's ``-cs``) against a
   temporary 1000-way fc8, thrown away afterwards as every task builds its own head.

The state is saved after every layer, so a killed initialisation resumes at the next layer.

Pretext figure (there is no pretext task): the spherical k-means objective of conv1 on
held-out images, i.e. the mean over their whitened conv1 patches of the largest cosine with a
filter's direction in the whitened space (:func:`benchharness.patch_kmeans.best_filter_cosine`;
the whitening is fitted on the training images' patches). ``value`` is the final network's
conv1, ``value_at_init`` the untrained (Gaussian) network's conv1, ``chance`` k random
centroids (Gaussian directions in the whitened space).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from benchharness import hookimpl
from benchharness.backbones import CONV_STAGES, STAGES
from benchharness.data.loading.pretext_pool import default_image_dirs, open_image_pool, split_held_out, subset
from benchharness.interfaces import Method, RunContext
from benchharness.patch_kmeans import best_filter_cosine, fit_whitening, layer_patches
from benchharness.representation import Representation, default_convention
from benchharness.rescale import (CALIBRATION_IMAGES, HEAD_OUTPUTS, INIT_BIAS, PATCHES_PER_IMAGE,
                                  calibrate_gradient_ratio, initialise_layers, parameter_layers,
                                  resized_batch, stage_layer)

DEFAULTS = {
    "data": "auto", "data_workers": 2,  # pool in memory, streamed from disk, or by size
    "images": 160,             # the tool: -nit 10 x -bs 16 images (the paper: the same)
    "patches_per_image": PATCHES_PER_IMAGE,  # random windows per image and layer
    "fc_type": "elwise",       # fc6/fc7: Gaussian as the paper; "kmeans" as the tool's -t kmeans
    "bias": INIT_BIAS,         # -b 0.1
    "calibrate": True,         # -cs: the between-layer change-rate equalisation
    "held_out": 0.1, "image_dirs": None, "store_size": None,  # None: the input side
}
FC_TYPES = ("elwise", "kmeans")


def _settings(ctx: RunContext, input_size: int) -> dict:
    unknown = set(ctx.config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"kmeans: unknown settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **ctx.config}
    cfg["store_size"] = cfg["store_size"] or input_size
    for key in ("images", "patches_per_image"):
        if int(cfg[key]) < 2:
            raise ValueError(f"kmeans: {key} must be at least 2, not {cfg[key]!r}")
    if cfg["fc_type"] not in FC_TYPES:
        raise ValueError(f"kmeans: fc_type must be one of {FC_TYPES}, not {cfg['fc_type']!r}")
    return cfg


def _network_input(images, idx, size: int, convention, device) -> torch.Tensor:
    """Whole images ``images[idx]`` resized to the input side, in the network's convention."""
    return convention.normalise(resized_batch(subset(images, idx), size)).to(device)


def pretrain(ctx: RunContext) -> Representation:
    """Initialise every layer from data (k-means conv filters, rescaling); no gradient step."""
    torch.manual_seed(ctx.seed)
    network = ctx.build_backbone().to(ctx.device)
    size = network.spec.input_size
    cfg = _settings(ctx, size)
    convention = default_convention(ctx.backbone)
    initial_conv1 = stage_layer(network, "conv1").weight.detach().clone()
    dirs = cfg["image_dirs"] or default_image_dirs(ctx.data_root)
    images = open_image_pool(dirs, cfg["store_size"], cfg["data"], cfg["data_workers"], ctx.progress,
                             ctx.cache_dir, ctx.log, "kmeans pool")
    train_idx, held_idx = split_held_out(len(images), cfg["held_out"], ctx.seed)
    gen = torch.Generator().manual_seed(ctx.seed)
    pick = train_idx[torch.randperm(len(train_idx), generator=gen)[:cfg["images"]]].sort().values
    x = _network_input(images, pick, size, convention, ctx.device)
    head = nn.Linear(network.out_dim, HEAD_OUTPUTS).to(ctx.device)
    layers = [name for name, _ in parameter_layers(network, head)]
    types = {name: "kmeans" if name in CONV_STAGES else cfg["fc_type"] for name in STAGES}
    checkpoint, first, stats = ctx.epoch_checkpoint(), 0, {}
    state = checkpoint.load()
    if state is not None:  # resume a killed initialisation after its last finished layer
        network.load_state_dict(state["network"])
        head.load_state_dict(state["head"])
        gen.set_state(state["gen"])
        first, stats = state["layer"], state["stats"]
        ctx.log(f"resuming kmeans pretraining at layer {first + 1} ({layers[first]})")
    start = time.perf_counter()
    network.eval()
    for i in ctx.bar(range(first, len(layers)), desc="pretrain kmeans", initial=first, total=len(layers)):
        stats.update(initialise_layers(network, x, [layers[i]], head, cfg["bias"], gen, types=types,
                                       seed=1000 * ctx.seed + 10 * i, per_image=cfg["patches_per_image"]))
        checkpoint.save({"network": network.state_dict(), "head": head.state_dict(),
                         "gen": gen.get_state(), "layer": i + 1, "stats": stats})
    calibration = None
    if cfg["calibrate"]:
        calibration = calibrate_gradient_ratio(network, head, x[:CALIBRATION_IMAGES], gen)
    init_seconds = time.perf_counter() - start
    pretext = held_out_cosine(network, initial_conv1, x, _network_input(images, held_idx, size, convention,
                                                                         ctx.device), cfg, ctx.seed)
    learned = CONV_STAGES if cfg["fc_type"] == "elwise" else STAGES
    return Representation(network.cpu(), ctx.backbone, convention, learned_stages=learned, meta={
        "pretrain_data": [str(d) for d in dirs], "pretrain_images": len(pick),
        "train_seconds": init_seconds, "gradient_steps": 0, "pretext": pretext,
        "init": stats, "calibration": calibration, "layer_types": {n: types.get(n, "elwise") for n in layers}})


@torch.no_grad()
def held_out_cosine(network, initial_conv1: torch.Tensor, train_x: torch.Tensor, held_x: torch.Tensor,
                    cfg: dict, seed: int) -> dict:
    """The pretext figure of the module docstring: conv1's best-filter cosine on held-out
    patches for the final filters (``value``), the untrained ones (``value_at_init``) and k
    random centroids (``chance``)."""
    conv1 = stage_layer(network, "conv1")
    gen = torch.Generator().manual_seed(seed)
    train = layer_patches(train_x, conv1, cfg["patches_per_image"], gen).double().cpu().numpy()
    held = layer_patches(held_x, conv1, cfg["patches_per_image"], gen).double().cpu().numpy()
    k = conv1.weight.shape[0]
    whitening = fit_whitening(train, k)
    rng = np.random.default_rng(seed)
    random_centroids = rng.standard_normal((k, train.shape[1])) @ whitening.matrix

    def figure(weight: torch.Tensor) -> float:
        return best_filter_cosine(held, weight.reshape(k, -1).double().cpu().numpy(), whitening)

    return {"metric": "conv1-best-filter-cosine", "value": figure(conv1.weight),
            "value_at_init": figure(initial_conv1), "chance": best_filter_cosine(held, random_centroids, whitening),
            "held_out_patches": len(held), "held_out_images": len(held_x)}


@hookimpl
def benchharness_methods():
    """Data-dependent k-means initialisation, no training."""
    return [Method("kmeans", "unsup", ("images",), pretrain,
                   "k-means data-dependent initialisation, rescaled (Krahenbuhl et al. 2016)")]
