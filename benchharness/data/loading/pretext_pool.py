"""The unlabelled image pool a self-supervised method pretrains on, with a held-out part.

By default: the images of the labelled source set (labels ignored; the ImageNet stand-in) plus
the unlabelled pool of a data root. A method's ``image_dirs`` setting replaces them with any
list of folders, each either a flat folder of images or a ``<class>/<image>`` tree.

A method's ``data`` setting (``auto``, ``memory``, ``stream``;
:func:`~benchharness.data.loading.streaming.choose_data_mode`) decides whether the pool is decoded into
memory or read from disk as minibatches need it (:class:`~benchharness.data.loading.streaming.StreamedImages`,
indexed the same way; :func:`subset` takes a part of either).

Decoded pools are cached under ``<cache_dir>/images/`` (one uint8 array per folder list and
size, keyed by the files' names, sizes and modification times) and memory-mapped by later
pretrainings, so every self-supervised method decodes the pool at most once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS

from ...interfaces import DataError
from ...rescale import stage_layer
from ...suite import config_hash
from ..datasets import locate_source, locate_unlabelled
from .folders import list_image_folder, list_image_pool, load_image_folder, load_image_pool
from .image_cache import cached_images
from .streaming import StreamedImages, choose_data_mode
from .transforms import center_crop_batch


def default_image_dirs(data_root: Path) -> list[Path]:
    """The source set's train folder and the unlabelled pool of ``data_root``."""
    return [locate_source(data_root), locate_unlabelled(data_root)]


def _is_flat(directory: Path) -> bool:
    return any(p.suffix.lower() in IMG_EXTENSIONS for p in directory.iterdir())


def _listing(directory: Path) -> list:
    """(relative path, bytes, mtime) of every image a folder contributes: the cache key."""
    pattern = "*" if _is_flat(directory) else "*/*"
    return [(str(p.relative_to(directory)), s.st_size, s.st_mtime_ns)
            for p in sorted(directory.glob(pattern)) if p.suffix.lower() in IMG_EXTENSIONS
            for s in (p.stat(),)]


def load_images(dirs: Sequence[Path | str], size: int, progress=None,
                cache_dir: Path | str | None = None) -> torch.Tensor:
    """Every image of ``dirs`` resized to ``size`` x ``size``: uint8 [N, 3, size, size].

    With ``cache_dir``, the decoded pool is stored there once and memory-mapped afterwards.
    """
    dirs = [Path(d) for d in dirs]
    for directory in dirs:
        if not directory.is_dir():
            raise DataError(directory, "image folder not found")

    def decode() -> torch.Tensor:
        batches = []
        for directory in dirs:
            if _is_flat(directory):
                batches.append(load_image_pool(directory, size, progress))
            else:
                batches.append(load_image_folder(directory, size, progress)[0])
        return torch.cat(batches)

    cache_file = None
    if cache_dir is not None:
        key = config_hash({"dirs": [str(d.resolve()) for d in dirs], "size": size,
                           "files": config_hash([_listing(d) for d in dirs], 32)})
        cache_file = Path(cache_dir) / "images" / f"pretext-pool-{size}-{key}.npy"
    images, _ = cached_images(cache_file, decode)
    return images


def open_image_pool(dirs: Sequence[Path | str], size: int, data: str = "auto", workers: int = 2,
                    progress=None, cache_dir: Path | str | None = None, log=None,
                    what: str = "pretext pool"):
    """The images of ``dirs`` at ``size`` pixels, in :func:`load_images`'s order: that array
    (``memory``) or a :class:`StreamedImages` over the same files decoding with ``workers``
    threads (``stream``); ``data`` ``auto`` chooses by the decoded size, logged to ``log``."""
    dirs = [Path(d) for d in dirs]
    for directory in dirs:
        if not directory.is_dir():
            raise DataError(directory, "image folder not found")
    paths = [p for d in dirs for p in (list_image_pool(d) if _is_flat(d) else list_image_folder(d)[0])]
    if choose_data_mode(data, len(paths), size, what, log) == "memory":
        return load_images(dirs, size, progress, cache_dir)
    return StreamedImages(paths, size, workers)


def subset(images, idx):
    """``images[idx]``: those rows of a decoded array, or a still undecoded view of a stream."""
    return images.subset(idx) if isinstance(images, StreamedImages) else images[idx]


def split_held_out(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of ``range(n)`` into (train, held-out) indices, held-out ~``fraction``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = max(1, round(n * fraction)) if fraction > 0 else 0
    if held >= n:
        raise ValueError(f"held-out fraction {fraction} leaves no training images out of {n}")
    return order[held:].sort().values, order[:held].sort().values


@torch.no_grad()
def stage_rms(network, images: torch.Tensor, chunk: int = 128) -> dict[str, float]:
    """Root mean square of every stage's output (after its ReLU / pool) over ``images``
    (already-normalised network input)."""
    from ...backbones import STAGES
    sums = {name: 0.0 for name in STAGES}
    counts = {name: 0 for name in STAGES}
    was_training = network.training
    network.eval()
    for start in range(0, len(images), chunk):
        h = images[start:start + chunk]
        for name in STAGES:
            if name == "fc6":
                h = torch.flatten(network.avgpool(h), 1)
            h = network.stage(name)(h)
            sums[name] += h.double().pow(2).sum().item()
            counts[name] += h.numel()
    network.train(was_training)
    return {name: (sums[name] / max(counts[name], 1)) ** 0.5 for name in STAGES}


@torch.no_grad()
def restore_stage_scales(network, reference, images: torch.Tensor, stages: Sequence[str]) -> dict:
    """Give the learned ``stages`` of ``network`` the output scale they had at initialisation.

    A network trained without normalisation layers drifts in scale (a pretext head downstream
    absorbs any factor), and a representation whose activations are 10 x too small or too large
    is one that a linear classifier trained with a fixed learning rate cannot read. Each learned
    stage k is rescaled so that its root-mean-square output on ``images`` equals that of
    ``reference`` (the same trunk as initialised): with cumulative factors C_k = rms_ref / rms,
    W_k is multiplied by C_k / C_(k-1) and b_k by C_k. ReLU, max- and average-pooling are
    positively homogeneous, so every stage's output is exactly C_k times what it was: the
    network's function is unchanged up to one positive factor per stage (what it learned is
    untouched). Stages after the last learned one are left as they are and simply receive
    input at the restored scale. Returns the factors and the scales before and after.
    """
    from ...backbones import STAGES
    stages = [s for s in STAGES if s in set(stages)]
    if not stages:
        return {}
    last = STAGES.index(stages[-1])
    before, target = stage_rms(network, images), stage_rms(reference, images)
    cumulative, previous, factors = 1.0, 1.0, {}
    for name in STAGES[:last + 1]:
        if name in stages and before[name] > 0:
            cumulative = target[name] / before[name]
        layer = stage_layer(network, name)
        layer.weight.mul_(cumulative / previous)
        layer.bias.mul_(cumulative)
        factors[name] = cumulative
        previous = cumulative
    after = stage_rms(network, images)
    return {"factors": factors, "rms_before": {s: before[s] for s in stages},
            "rms_after": {s: after[s] for s in stages}, "rms_reference": {s: target[s] for s in stages}}


def restore_scales_on(network, reference, images: torch.Tensor, convention, stages: Sequence[str],
                      device) -> dict:
    """:func:`restore_stage_scales` measured on ``images`` (uint8 [N, 3, S, S], e.g. up to 256
    held-out ones): their centre crops at the trunk's input side, normalised by ``convention``
    (the method's :class:`~benchharness.representation.InputConvention`), on ``device``."""
    x = convention.normalise(center_crop_batch(images, network.spec.input_size).to(device))
    return restore_stage_scales(network, reference.to(device), x, stages)
