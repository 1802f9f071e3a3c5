"""``voc07-cls`` under a ``knn-<stage>`` protocol: multi-label k-NN on a frozen stage.

The train split's images (trainval) are the neighbours, the test split's the queries; each
test image's score for a class is the similarity-weighted (``knn_weighting``) vote of its
``knn_k`` cosine-nearest training images that are positive for the class
(:mod:`~benchharness.tasks.knn`), scored by the suite's VOC AP evaluators as every other
protocol. The images are the split arrays the other protocols read (same image cache); the
features are one centre crop per image, computed once per (representation, stage, split) and
cached (:mod:`~benchharness.tasks.stage_features`). Nothing trains and nothing is random: every
seed gives the same number.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from ..accel import images_home, peak_memory_mb, reset_peak_memory
from ..data.voc.classes import VOC_CLASSES
from ..data.voc.devkit import VOCDevkit, locate_devkit
from ..interfaces import ClsGroundTruth, Predictions, RunContext, TransferOutput
from ..representation import Representation
from ..rescale import rescaled
from .crop_bank import feature_cache_key
from .knn import check_knn_settings, knn_scores, knn_stage
from .stage_features import stage_features


def split_features(representation: Representation, images, split: str, stage: str, cfg,
                   ctx: RunContext) -> np.ndarray:
    """``stage``'s centre-crop rows for every image of ``split`` (cached when ``cfg.feature_cache``)."""
    cache_file = None
    key = cfg.feature_cache and feature_cache_key(
        representation, device=ctx.device, amp=cfg.amp, data_root=ctx.data_root,
        settings={"knn": stage, "year": cfg.year, "split": split, "store": cfg.store_size,
                  "input": cfg.input_size, "rescale": cfg.rescale, "rescale_images": cfg.rescale_images})
    if key:
        cache_file = Path(ctx.cache_dir) / "features" / f"knn-{stage}-{key}.npy"
    batches = (images[start:start + 256] for start in range(0, len(images), 256))
    return stage_features(copy.deepcopy(representation.network), representation.input, batches,
                          len(images), stage, cfg.input_size, ctx.device, cfg.amp, cache_file,
                          ctx.progress)


def transfer_knn(representation: Representation, protocol: str, cfg, ctx: RunContext,
                 load_split) -> TransferOutput:
    """k-NN of the test split among the train split on ``protocol``'s stage; ``cfg`` is the
    task's settings (``ClsConfig``), ``load_split`` its split reader."""
    stage = knn_stage(protocol)
    check_knn_settings("voc07-cls", cfg.knn_k, cfg.knn_weighting)
    devkit = VOCDevkit(locate_devkit(ctx.data_root))
    t0 = time.perf_counter()
    _, train_labels, train_images = load_split(devkit, cfg.year, cfg.train_split, cfg.store_size,
                                               ctx, cfg.image_cache)
    test_ids, test_labels, test_images = load_split(devkit, cfg.year, cfg.test_split, cfg.store_size,
                                                    ctx, cfg.image_cache)
    reset_peak_memory(ctx.device)
    t_data = time.perf_counter() - t0
    source, rescale_stats = representation, None
    if cfg.rescale:
        source, rescale_stats = rescaled(representation, images_home(train_images, ctx.device),
                                         cfg.rescale_images, ctx.device)
    train_rows = split_features(source, train_images, cfg.train_split, stage, cfg, ctx)
    test_rows = split_features(source, test_images, cfg.test_split, stage, cfg, ctx)
    t_feats = time.perf_counter() - t0 - t_data
    scores = knn_scores(train_rows, np.asarray(train_labels) == 1, test_rows, len(VOC_CLASSES),
                        cfg.knn_k, cfg.knn_weighting, ctx.device)
    t_total = time.perf_counter() - t0
    return TransferOutput(
        predictions=Predictions("cls", VOC_CLASSES, test_ids, scores=scores),
        ground_truth=ClsGroundTruth(VOC_CLASSES, test_ids, test_labels),
        metric=cfg.metric, extra_metrics=cfg.extra_metrics,
        timing={"data": t_data, "features": t_feats, "train": 0.0,
                "predict": t_total - t_data - t_feats, "transfer": t_total},
        info={"split": cfg.test_split, "year": cfg.year, "train_images": len(train_labels),
              "test_images": len(test_ids), "stage": stage, "feature_dim": int(train_rows.shape[1]),
              "knn_k": cfg.knn_k, "knn_weighting": cfg.knn_weighting, "input_size": cfg.input_size,
              "store_size": cfg.store_size, "amp": cfg.amp, "rescale": rescale_stats,
              "feature_cache": cfg.feature_cache, "peak_memory_mb": peak_memory_mb(ctx.device)})
