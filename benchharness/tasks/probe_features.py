"""Frozen features of every stage for the linear probes: one forward pass per image, each
stage pooled to a fixed size and cached on its own.

What each stage gives (``PROBE_POINTS``):

- ``conv1`` .. ``conv4``: the convolution's rectified output, before its LRN and max-pool, as
  Zhang et al. (2016, 2017) and Goyal et al. (2019) read relu1..relu4 for their linear
  classifiers; average-pooled to a grid of about ``dims`` values (9,216 by default: ~9k as
  theirs). The grid side is ``round(sqrt(dims / channels))``, never more than the map's: on
  CaffeNet that gives their grids exactly (conv1 96 x 10 x 10, conv2 256 x 6 x 6, conv3 and conv4
  384 x 5 x 5). Their windows are fixed and overlapping (CaffeNet conv1: 19 x 19, stride 4);
  here the pooling is adaptive (``torch.nn.functional.adaptive_avg_pool2d``: adjacent windows)
  unless ``windows`` gives a stage's kernel and stride, as ``voc-transfer.toml`` does for theirs.
- ``conv5``: the stage's output, after its max-pool: pool5 (CaffeNet: 256 x 6 x 6 = 9,216), the
  layer Owens et al. (2016) train their linear SVMs on (their "pool5" column); pooled further
  only if it exceeds the grid rule above. (Goyal et al. average-pool relu5 instead.)
- ``fc6``, ``fc7``: the stage's output after its ReLU (dropout is off), as DeCAF and Owens et al.

Each image enters once, as one view (``view``): ``resize``, the whole stored image at the
network's input size (Goyal et al.'s global resize), or ``center``, its central input-size
crop (Caffe's test crop). Features are cached under ``<cache>/features/probe-<stage>-<key>``
(:func:`~benchharness.tasks.crop_bank.feature_cache_key`: representation, input, arithmetic,
data, and this stage's settings), so a later probe of another stage of the same representation
reads its file; a pass computes every stage still missing.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from ..accel import autocast, prepare_model, to_device
from ..backbones import CONV_STAGES, STAGES
from .crop_bank import feature_cache_key, load_features, store_features

PROBE_POINTS = {**{s: "relu" for s in CONV_STAGES[:4]}, "conv5": "output", "fc6": "output", "fc7": "output"}
"""Where each stage is read: ``relu`` (the convolution's rectified output, before LRN and pool)
or ``output`` (the stage's output)."""

VIEWS = ("resize", "center")
POOLS = ("avg", "max")


def grid_side(channels: int, side: int, dims: int) -> int:
    """The side of the square grid a ``channels`` x ``side`` x ``side`` map is pooled to:
    ``round(sqrt(dims / channels))``, at least 1 and at most ``side``."""
    return max(1, min(side, round(math.sqrt(dims / channels))))


def pool_map(x: torch.Tensor, dims: int, pool: str = "avg",
             window: tuple[int, int] | None = None) -> torch.Tensor:
    """A map [B, C, H, W] pooled and flattened to [B, C * s * s]: with ``window`` (kernel,
    stride), fixed windows; else adaptive pooling to the grid of :func:`grid_side`."""
    if pool not in POOLS:
        raise ValueError(f"probe pool must be one of {POOLS}, not {pool!r}")
    if window is not None:
        kernel, stride = window
        if kernel > min(x.shape[-2:]):
            raise ValueError(f"probe window {kernel}x{kernel} is larger than the map "
                             f"{tuple(x.shape[-2:])}")
        pooled = (F.avg_pool2d if pool == "avg" else F.max_pool2d)(x, kernel, stride)
    else:
        side = grid_side(x.shape[1], min(x.shape[-2:]), dims)
        pooled = (F.adaptive_avg_pool2d if pool == "avg" else F.adaptive_max_pool2d)(x, side)
    return pooled.flatten(1)


def check_windows(windows: Mapping) -> dict[str, tuple[int, int]]:
    """``{stage: (kernel, stride)}`` from a suite's ``windows`` table; a ValueError naming the
    stage when it is not conv1..conv5 or its value is not two positive integers."""
    out = {}
    for stage, value in dict(windows).items():
        if stage not in CONV_STAGES:
            raise ValueError(f"probe windows: {stage!r} is not a conv stage ({', '.join(CONV_STAGES)})")
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
            raise ValueError(f"probe windows: {stage} needs [kernel, stride], two positive integers; "
                             f"got {value!r}")
        out[stage] = (value[0], value[1])
    return out


def view(images: torch.Tensor, size: int, how: str) -> torch.Tensor:
    """uint8 images [B, 3, S, S] as float RGB in [0, 1] at ``size``: resized whole (``resize``)
    or their central ``size`` crop (``center``)."""
    if how == "resize":
        return TF.resize(images, [size, size], antialias=True).float().div_(255)
    if how == "center":
        return TF.center_crop(images, [size, size]).float().div_(255)
    raise ValueError(f"probe view must be one of {VIEWS}, not {how!r}")


@torch.no_grad()
def stage_features(network, x: torch.Tensor, stages, dims: int, pool: str = "avg",
                   windows: Mapping[str, tuple[int, int]] | None = None) -> dict[str, torch.Tensor]:
    """The probe features [B, D] of ``stages`` for one normalised batch ``x``, from a single
    forward pass of ``network`` (an :class:`~benchharness.backbones.AlexNetTrunk`) through the
    deepest of them."""
    windows = windows or {}
    found: dict[str, torch.Tensor] = {}

    def keep(stage):
        def hook(_module, _inputs, out):
            out = out.float()
            found[stage] = pool_map(out, dims, pool, windows.get(stage)) if out.dim() == 4 else out
        return hook

    handles = [(network.stage(s).relu if PROBE_POINTS[s] == "relu" else network.stage(s))
               .register_forward_hook(keep(s)) for s in stages]
    try:
        network.forward_to(x, max(stages, key=STAGES.index))
    finally:
        for handle in handles:
            handle.remove()
    return {s: found[s] for s in stages}


def probe_features(representation, network, images: torch.Tensor, stage: str, *, input_size: int,
                   how: str, dims: int, pool: str, windows: Mapping[str, tuple[int, int]],
                   cache_dir: Path | None, key_settings: Mapping, device: torch.device, amp: str,
                   data_root: Path, batch_size: int = 128, progress=None) -> tuple[torch.Tensor, bool]:
    """The probe features [N, D] of ``stage`` for uint8 ``images`` [N, 3, S, S], and whether
    they came from the cache.

    ``network`` is the trunk to read (the representation's, or its rescaled copy; left
    untouched); ``key_settings`` are the caller's settings that change every stage (split,
    sizes, rescaling). Without ``cache_dir`` nothing is cached.
    """
    def cache_file(s):
        if cache_dir is None:
            return None
        key = feature_cache_key(representation, device=device, amp=amp, data_root=data_root, settings={
            **key_settings, "probe": s, "point": PROBE_POINTS[s], "view": how, "input": input_size,
            "dims": dims, "pool": pool, "window": windows.get(s)})
        return key and Path(cache_dir) / "features" / f"probe-{s}-{key}.safetensors"

    files = {s: cache_file(s) for s in STAGES}
    cached = load_features(files[stage])
    if cached is not None:
        return cached, True
    missing = [s for s in STAGES if s == stage or (files[s] is not None and not files[s].is_file())]
    trunk = prepare_model(copy.deepcopy(network), device).eval()
    parts: dict[str, list[torch.Tensor]] = {s: [] for s in missing}
    chunks = range(0, len(images), batch_size)
    for start in (progress(chunks, desc="probe features", leave=False) if progress else chunks):
        x = view(to_device(images[start:start + batch_size], device), input_size, how)
        with autocast(device, amp):
            feats = stage_features(trunk, representation.input.normalise(x), missing, dims, pool, windows)
        for s in missing:
            parts[s].append(feats[s].float().cpu())
    out = {s: torch.cat(parts[s]) for s in missing}
    for s in missing:
        if files[s] is not None:
            store_features(files[s], out[s])
    return out[stage], False
