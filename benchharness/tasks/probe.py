"""The linear probes of ``voc07-cls``: protocols ``probe-conv1`` .. ``probe-fc7``.

A probe reads one stage of the frozen representation (:mod:`.probe_features`: one view per
image, conv maps pooled to ~9k values, every stage cached from one forward pass), L2-normalises
each image's feature vector (Goyal et al. 2019's ``normalize_features``) and trains one linear
SVM per class on the training split, its cost chosen by cross-validation
(:mod:`.probe_classifier`); the test split's decision values are scored by the task's AP
evaluators like every other ``voc07-cls`` protocol.

Settings: the task section's ``year``, splits, ``input_size``, ``store_size``, ``amp``,
``rescale``, caches and metrics, plus the ``[tasks.voc07-cls.probe]`` table (:class:`ProbeConfig`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..accel import peak_memory_mb, reset_peak_memory
from ..data.voc.classes import VOC_CLASSES
from ..data.voc.devkit import VOCDevkit, locate_devkit
from ..interfaces import ClsGroundTruth, Predictions, RunContext, TransferOutput
from ..mappings import dataclass_from_mapping
from ..representation import Representation
from ..rescale import rescaled
from . import probe_classifier, probe_features
from .classification import ClsConfig, load_split
from .linear_svm import SOLVERS

PREFIX = "probe-"


@dataclass
class ProbeConfig:
    """The ``[tasks.voc07-cls.probe]`` table: how the features are taken and the SVMs chosen."""

    costs: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)  # the SVM cost grid
    folds: int = 3  # cross-validation folds on the training split
    positive_weight: float = 2.0  # a positive's hinge loss weighs this many negatives'
    normalize: bool = True  # each image's feature vector scaled to unit L2 norm
    dims: int = 9216  # conv maps are pooled to a grid of about this many values
    pool: str = "avg"  # avg | max
    windows: dict = field(default_factory=dict)  # {stage: [kernel, stride]}: fixed pooling windows
    view: str = "resize"  # resize: the whole image at the input size; center: its central crop
    solver: str = "auto"  # auto (see solver_on) | sklearn | torch
    tol: float = 1e-4  # liblinear's stopping tolerance (sklearn solver)
    max_iter: int = 2000  # liblinear's iteration limit (sklearn solver)

    @classmethod
    def from_mapping(cls, raw) -> "ProbeConfig":
        """From the suite's table; unknown keys and bad values are errors naming them."""
        cfg = dataclass_from_mapping(cls, dict(raw or {}), "voc07-cls probe")
        probe_classifier.check_grid(cfg.costs, cfg.folds)
        cfg.windows = probe_features.check_windows(cfg.windows)
        for name, value, allowed in (("pool", cfg.pool, probe_features.POOLS),
                                     ("view", cfg.view, probe_features.VIEWS),
                                     ("solver", cfg.solver, ("auto", *SOLVERS))):
            if value not in allowed:
                raise ValueError(f"voc07-cls probe: {name} must be one of {allowed}, not {value!r}")
        if cfg.dims < 1 or cfg.positive_weight <= 0:
            raise ValueError(f"voc07-cls probe: dims must be >= 1 and positive_weight > 0 "
                             f"(got {cfg.dims}, {cfg.positive_weight})")
        return cfg

    def solver_on(self, device: torch.device, n: int, d: int) -> str:
        """The solver that runs for ``n`` training images of ``d`` features: ``auto`` is
        ``torch`` on CUDA; on a CPU, ``torch`` when the features outnumber the images (liblinear
        slows with the dimension, the torch solver's kernel system does not) and ``sklearn``
        otherwise (README "Linear probes" and ``benchmarks/probe_solvers.py`` give the times)."""
        if self.solver != "auto":
            return self.solver
        return "torch" if device.type == "cuda" or d >= n else "sklearn"


def stage_of(protocol: str) -> str:
    """``probe-conv3`` -> ``conv3``."""
    return protocol.removeprefix(PREFIX)


def normalized(features: torch.Tensor) -> np.ndarray:
    """Each row scaled to unit L2 norm (float64); an all-zero row stays zero."""
    x = features.double().numpy()
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-5)


def transfer(representation: Representation, protocol: str, ctx: RunContext) -> TransferOutput:
    """Train the probe of ``protocol``'s stage on the train split and score the test split."""
    stage = stage_of(protocol)
    cfg = ClsConfig.from_mapping(ctx.config, protocol)
    probe = ProbeConfig.from_mapping(cfg.probe)
    cfg.input_size = cfg.input_size or representation.network.spec.input_size
    cfg.store_size = cfg.store_size or round(cfg.input_size * 1.25)
    devkit = VOCDevkit(locate_devkit(ctx.data_root))
    t0 = time.perf_counter()
    _, train_labels, train_images = load_split(devkit, cfg.year, cfg.train_split, cfg.store_size, ctx,
                                               cfg.image_cache)
    test_ids, test_labels, test_images = load_split(devkit, cfg.year, cfg.test_split, cfg.store_size,
                                                    ctx, cfg.image_cache)
    reset_peak_memory(ctx.device)
    t_data = time.perf_counter() - t0

    network, rescale_stats = representation.network, None
    if cfg.rescale:
        rescaled_rep, rescale_stats = rescaled(representation, train_images, cfg.rescale_images, ctx.device)
        network = rescaled_rep.network
    cache_dir = ctx.cache_dir if cfg.feature_cache else None
    shared = dict(input_size=cfg.input_size, how=probe.view, dims=probe.dims, pool=probe.pool,
                  windows=probe.windows, cache_dir=cache_dir, device=ctx.device, amp=cfg.amp,
                  data_root=ctx.data_root, progress=ctx.progress)
    rescaling = {"rescale": cfg.rescale, "rescale_images": cfg.rescale_images}
    features, from_cache = {}, []
    for split, images in ((cfg.train_split, train_images), (cfg.test_split, test_images)):
        feats, hit = probe_features.probe_features(
            representation, network, images, stage,
            key_settings={**rescaling, "year": cfg.year, "split": split, "store": cfg.store_size},
            **shared)
        features[split] = feats
        from_cache.append(hit)
    train_x, test_x = features[cfg.train_split], features[cfg.test_split]
    dims = int(train_x.shape[1])
    if probe.normalize:
        train_x, test_x = normalized(train_x), normalized(test_x)
    else:
        train_x, test_x = train_x.double().numpy(), test_x.double().numpy()
    t_feats = time.perf_counter() - t0 - t_data

    solver = probe.solver_on(ctx.device, *train_x.shape)
    fit = probe_classifier.fit_probe(train_x, train_labels, test_x, probe.costs, probe.folds, ctx.seed,
                                     solver, probe.positive_weight, ctx.device, probe.tol, probe.max_iter)
    t_total = time.perf_counter() - t0
    return TransferOutput(
        predictions=Predictions("cls", VOC_CLASSES, test_ids, scores=fit.scores.astype(np.float32)),
        ground_truth=ClsGroundTruth(VOC_CLASSES, test_ids, test_labels),
        metric=cfg.metric, extra_metrics=cfg.extra_metrics,
        timing={"data": t_data, "features": t_feats, "train": t_total - t_data - t_feats,
                "predict": 0.0, "transfer": t_total},
        info={"split": cfg.test_split, "year": cfg.year, "train_images": len(train_labels),
              "test_images": len(test_ids), "stage": stage, "read_at": probe_features.PROBE_POINTS[stage],
              "feature_dims": dims, "solver": solver, "input_size": cfg.input_size,
              "features_from_cache": all(from_cache), "amp": cfg.amp, "rescale": rescale_stats,
              "probe": {**{k: v for k, v in asdict(probe).items() if k not in ("costs", "windows")},
                        "windows": {s: list(w) for s, w in probe.windows.items()},
                        **probe_classifier.describe(fit, VOC_CLASSES)},
              "peak_memory_mb": peak_memory_mb(ctx.device)},
    )
