"""``tracking``: unsupervised learning from tracked patches in video (Wang & Gupta 2015), ``self-sup``.

In every clip the moving regions are found (background subtraction against the clip's temporal
median, or three-frame differencing) and each is tracked ``track_frames`` frames on (template
matching, or OpenCV's KCF / CSRT / MIL trackers), see :mod:`benchharness_plugins.tracking.tracks`. A query
patch and its tracked patch are two views of one object; a patch from another clip is a
negative. A siamese network (one trunk, shared weights) embeds each patch; the triplet ranking
loss ``max(0, D(q, t) - D(q, n) + margin)`` with the cosine distance ``D = 1 - cos`` pulls the
tracked patch closer to its query than the negative. The negative of each query is one of
``negatives`` random patches of other clips in the batch: at random for the first
``warmup_epochs`` epochs, then the hardest of them (the closest to the query), as in the paper.

The embedding: in the paper fc7 itself is the 1024-d, L2-normalised embedding. Our backbones
keep fc7 at their own width (256 for ``alexnet-small``, 4096 for ``alexnet``) so that every task
applies unchanged, so the embedding is a linear map of fc7 to ``embedding_dim`` (1024 by
default) followed by L2 normalisation; that map is part of the pretext network only and is not
exported. ``embedding_dim = 0`` uses the L2-normalised fc7 itself. Every stage, conv1..fc7, is
trained by the pretext, so all are learned stages.

Patches are cut from the frames with a little jitter of position and scale and mirrored at
random. The pretext measurement is the triplet ranking accuracy on held-out clips, the share of
triplets with ``D(q, t) < D(q, n)`` (chance 0.5), with hard negatives: for each query of a
held-out clip, the ``eval_negatives`` tracked patches of other held-out clips closest to it in
pixels (L2 between 8 x 8 thumbnails), in the spirit of the paper's hard-negative mining but
chosen independently of the network, so the figure is the same test before and after training.
The same figure for the untrained network is ``value_at_init``. With every tracked patch of
another clip as a negative (``value_all_negatives``) colour alone makes the test easy: the
untrained network scored 0.975 there on the small world's first clips (0.914 on the current). ``top1_retrieval`` is the stricter
share of queries whose tracked patch is closer than every patch of the other held-out clips
(its chance, ``top1_retrieval_chance``, is about one over their number).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchharness import hookimpl
from benchharness.accel import prepare_model
from benchharness.backbones import STAGES
from benchharness.data.loading.clip_source import clip_folder, load_clip_split
from benchharness.data.loading.transforms import crop_batch
from benchharness.interfaces import DataError, Method, RunContext
from benchharness.representation import InputConvention, Representation
from benchharness.training import OneCycleEpochs, with_value_at_init
from .tracks import DETECTORS, TRACKERS, TrackedPairs, mine_pairs

DEFAULTS = {
    "data": "auto", "data_workers": 2,  # frames in memory, streamed from disk, or by size
    "epochs": 10, "batch_size": 32, "lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4,
    "margin": 0.5, "embedding_dim": 1024, "negatives": 4, "warmup_epochs": 2,
    # clips
    "video_dir": None, "frames": 16, "frame_rate": None, "store_size": 96,
    # mining and tracking
    "detector": "median", "tracker": "template", "queries_per_clip": 2, "boxes_per_frame": 2,
    "track_frames": 8, "gap": 2, "threshold": 15, "min_area": 40, "context": 1.25,
    "jitter": 0.08,            # patch position/scale jitter, fraction of the patch side
    "held_out": 0.1, "seed": 0,
    "eval_negatives": 5,       # held-out measurement: per query, its pixel-nearest patches of other clips
}


def _settings(ctx: RunContext) -> dict:
    unknown = set(ctx.config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"tracking: unknown settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **ctx.config}
    if cfg["tracker"] not in TRACKERS:
        raise ValueError(f"tracking: tracker must be one of {TRACKERS}, not {cfg['tracker']!r}")
    if cfg["detector"] not in DETECTORS:
        raise ValueError(f"tracking: detector must be one of {DETECTORS}, not {cfg['detector']!r}")
    for key in ("negatives", "eval_negatives"):
        if cfg[key] < 1:
            raise ValueError(f"tracking: {key} must be at least 1, not {cfg[key]}")
    return cfg


class TripletNet(nn.Module):
    """The siamese embedding: the trunk through fc7, an optional linear map to ``dim``, L2 norm."""

    def __init__(self, trunk: nn.Module, dim: int):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.out_dim, dim) if dim else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings [N, dim] of network-ready patches [N, C, H, W]."""
        return F.normalize(self.head(self.trunk(x)), dim=1)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise ``1 - cos(a_i, b_i)``."""
    return 1.0 - F.cosine_similarity(a, b, dim=1)


def triplet_ranking_loss(query: torch.Tensor, tracked: torch.Tensor, negative: torch.Tensor,
                         margin: float) -> torch.Tensor:
    """Mean over triplets of ``max(0, D(q, t) - D(q, n) + margin)``, D the cosine distance."""
    return F.relu(cosine_distance(query, tracked) - cosine_distance(query, negative) + margin).mean()


def choose_negatives(query: torch.Tensor, candidates: torch.Tensor, clip: torch.Tensor, k: int,
                     hard: bool, generator: torch.Generator) -> torch.Tensor:
    """For each query, the index of its negative among ``candidates`` (the batch's tracked
    patches): ``k`` random candidates from other clips, then the first of them (``hard``
    False: a random negative) or the one closest to the query (``hard``: the hardest).
    Queries without any candidate from another clip get -1."""
    n = len(query)
    other = clip[:, None] != clip[None, :]
    draw = torch.rand(n, n, generator=generator).to(query.device)
    draw = draw.masked_fill(~other, -1.0)
    k = min(k, n)
    picked = draw.topk(k, dim=1).indices  # k random candidates, valid ones first
    valid = other.gather(1, picked)
    if hard:
        with torch.no_grad():
            similarity = (query @ candidates.T).gather(1, picked).masked_fill(~valid, -float("inf"))
        choice = picked.gather(1, similarity.argmax(1, keepdim=True))[:, 0]
    else:
        choice = picked[:, 0]
    return torch.where(valid.any(1), choice, torch.full_like(choice, -1))


def batch_triplet_loss(query: torch.Tensor, tracked: torch.Tensor, negative: torch.Tensor,
                       margin: float) -> torch.Tensor | None:
    """:func:`triplet_ranking_loss` of a batch, ``tracked[negative[i]]`` the negative of query i
    (from :func:`choose_negatives`; queries with -1 left out); None when no query has one."""
    keep = negative >= 0
    if not keep.any():
        return None
    # index_select, not tracked[negative]: the backward of indexing with repeated indices (one
    # negative shared by several queries) accumulates in a thread-dependent order on CPU, which
    # made two runs with the same seed differ
    negatives = tracked.index_select(0, negative[keep])
    return triplet_ranking_loss(query[keep], tracked[keep], negatives, margin)


def _patches(frames: torch.Tensor, clip: np.ndarray, frame: np.ndarray, boxes: np.ndarray, size: int,
             convention: InputConvention, generator: torch.Generator | None, jitter: float,
             device: torch.device) -> torch.Tensor:
    """Network-ready patches: ``boxes`` (x1, y1, x2, y2) cut from frame ``frame[i]`` of clip
    ``clip[i]`` of ``frames`` [N, T, S, S, 3], jittered and mirrored when a generator is given."""
    images = frames[torch.as_tensor(clip), torch.as_tensor(frame)].permute(0, 3, 1, 2)
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    flip = None
    if generator is not None:
        side = (boxes[:, 2] - boxes[:, 0])[:, None]
        shift = (torch.rand(len(boxes), 2, generator=generator) * 2 - 1) * jitter * side
        scale = 1 + (torch.rand(len(boxes), 1, generator=generator) * 2 - 1) * jitter
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + shift
        half = side * scale / 2
        boxes = torch.cat([centre - half, centre + half], dim=1)
        flip = torch.rand(len(boxes), generator=generator) < 0.5
    return convention.normalise(crop_batch(images.to(device), boxes.to(device), size, flip))


def pretrain(ctx: RunContext) -> Representation:
    """Train the trunk on triplets of tracked patches; returns conv1..fc7 as learned."""
    cfg = _settings(ctx)
    torch.manual_seed(ctx.seed)
    network = ctx.build_backbone()
    size = network.spec.input_size
    folder = clip_folder(ctx.data_root, cfg["video_dir"])
    clips, train_idx, held_idx = load_clip_split(folder, cfg, cfg["store_size"], cfg["held_out"], ctx.seed,
                                                 audio=False, cache_dir=ctx.cache_dir, progress=ctx.progress,
                                                 log=ctx.log, what="tracking clips")
    t_mine = time.perf_counter()
    pairs = mine_pairs(clips.frames.numpy(), cfg["queries_per_clip"], cfg["boxes_per_frame"],
                       cfg["track_frames"], cfg["gap"], cfg["tracker"], cfg["detector"], cfg["threshold"],
                       cfg["min_area"], cfg["context"], ctx.progress)
    mine_seconds = time.perf_counter() - t_mine
    in_train = np.isin(pairs.clip, train_idx.numpy())
    train, held = _subset(pairs, in_train), _subset(pairs, ~in_train)
    if len(train) < 2 or len(np.unique(train.clip)) < 2:
        raise DataError(folder, f"only {len(train)} tracked patch pairs in {len(np.unique(train.clip))} "
                                "training clips: too little motion was found to learn from (lower "
                                "`threshold` or `min_area`, or use clips with moving objects)")
    convention = InputConvention()
    model = prepare_model(TripletNet(network, cfg["embedding_dim"]), ctx.device)
    initial = held_out_accuracy(model, clips.frames, held, size, convention, ctx, cfg["eval_negatives"])
    loop = OneCycleEpochs(ctx, model, cfg, max(1, len(train) // cfg["batch_size"]), "tracking",
                          pct_start=0.2)
    gen = loop.generator
    start = time.perf_counter()
    for epoch in loop:
        hard = epoch >= cfg["warmup_epochs"]
        loop.postfix["negatives"] = "hard" if hard else "random"
        order = torch.randperm(len(train), generator=gen).numpy()
        for step in range(loop.steps_per_epoch):
            idx = order[step * cfg["batch_size"]:(step + 1) * cfg["batch_size"]]
            q = _patches(clips.frames, train.clip[idx], train.query_frame[idx], train.query[idx], size,
                         convention, gen, cfg["jitter"], ctx.device)
            t = _patches(clips.frames, train.clip[idx], train.tracked_frame[idx], train.tracked[idx], size,
                         convention, gen, cfg["jitter"], ctx.device)
            emb = model(torch.cat([q, t]))
            eq, et = emb[:len(idx)], emb[len(idx):]
            neg = choose_negatives(eq, et, torch.as_tensor(train.clip[idx]).to(ctx.device), cfg["negatives"],
                                   hard, gen)
            loss = batch_triplet_loss(eq, et, neg, cfg["margin"])
            if loss is not None:  # None: every pair of the batch from one clip, no negative to rank
                loop.step(loss)
    train_seconds = time.perf_counter() - start
    pretext = held_out_accuracy(model, clips.frames, held, size, convention, ctx, cfg["eval_negatives"])
    pretext = with_value_at_init(pretext, initial, ctx.log, extra=("value_all_negatives", "top1_retrieval"))
    return Representation(network.cpu(), ctx.backbone, convention, learned_stages=STAGES, meta={
        "pretrain_data": str(folder), "pretrain_clips": len(train_idx), "tracked_pairs": len(train),
        "mine_seconds": mine_seconds, "train_seconds": train_seconds, "pretext": pretext,
        "embedding_dim": cfg["embedding_dim"] or network.out_dim})


def _subset(pairs: TrackedPairs, keep: np.ndarray) -> TrackedPairs:
    return TrackedPairs(pairs.clip[keep], pairs.query_frame[keep], pairs.query[keep],
                        pairs.tracked_frame[keep], pairs.tracked[keep])


THUMBNAIL = 8
"""Side of the thumbnails (average-pooled network input) whose L2 distance picks the hard negatives."""


def pixel_hard_negatives(query_thumbs: torch.Tensor, tracked_thumbs: torch.Tensor, clip: torch.Tensor,
                         k: int) -> torch.Tensor:
    """For each query, a mask [N, N] over the tracked patches: the ``k`` of other clips closest to
    it in pixels (L2 between flattened thumbnails), the negatives raw pixels confuse most."""
    distance = torch.cdist(query_thumbs, tracked_thumbs)
    distance = distance.masked_fill(clip[:, None] == clip[None, :], float("inf"))
    k = min(k, len(clip))
    nearest = distance.topk(k, dim=1, largest=False)
    mask = torch.zeros_like(distance, dtype=torch.bool).scatter_(1, nearest.indices, True)
    return mask & torch.isfinite(distance)


@torch.no_grad()
def held_out_accuracy(model: TripletNet, frames: torch.Tensor, pairs: TrackedPairs, size: int,
                      convention: InputConvention, ctx: RunContext, hard_negatives: int = 5) -> dict | None:
    """Triplet ranking accuracy on held-out clips, the share of (query, its tracked patch, a
    negative) triplets with D(q, t) < D(q, n); chance 0.5.

    ``value``: the negatives of each query are the ``hard_negatives`` tracked patches of other
    held-out clips closest to it in pixels (:func:`pixel_hard_negatives`; on the synthetic world
    mostly objects of its class), so raw pixels do not solve it. ``value_all_negatives``: every
    tracked patch of another held-out clip is a negative (mostly other colours: easy).
    ``top1_retrieval``: the share of queries whose tracked patch is closer than every patch of
    the other held-out clips."""
    if len(pairs) == 0 or len(np.unique(pairs.clip)) < 2:
        return None
    was_training = model.training
    model.eval()
    eq, et, thumbs_q, thumbs_t = [], [], [], []
    for s in range(0, len(pairs), 128):
        sl = slice(s, s + 128)
        for boxes, frame, embeddings, thumbs in ((pairs.query, pairs.query_frame, eq, thumbs_q),
                                                 (pairs.tracked, pairs.tracked_frame, et, thumbs_t)):
            x = _patches(frames, pairs.clip[sl], frame[sl], boxes[sl], size, convention, None, 0.0, ctx.device)
            embeddings.append(model(x))
            thumbs.append(F.adaptive_avg_pool2d(x, THUMBNAIL).flatten(1))
    eq, et = torch.cat(eq), torch.cat(et)
    similarity = eq @ et.T  # cos(q_i, t_j)
    positive = similarity.diagonal()[:, None]
    clip = torch.as_tensor(pairs.clip).to(similarity.device)
    other = clip[:, None] != clip[None, :]
    hard = pixel_hard_negatives(torch.cat(thumbs_q), torch.cat(thumbs_t), clip, hard_negatives)
    beaten = (positive > similarity) & other
    # retrieval: the tracked patch is closer to its query than every patch of the other clips
    top1 = (beaten | ~other).all(1).float().mean().item()
    model.train(was_training)
    return {"metric": "triplet-ranking-accuracy (pixel-hard negatives)",
            "value": (beaten & hard).sum().item() / hard.sum().item(), "chance": 0.5,
            "hard_negatives": hard_negatives, "held_out_triplets": int(hard.sum().item()),
            "value_all_negatives": beaten.sum().item() / other.sum().item(),
            "all_negative_triplets": int(other.sum().item()), "held_out_pairs": len(pairs),
            "top1_retrieval": top1, "top1_retrieval_chance": float((1 / (1 + other.sum(1).float())).mean())}


@hookimpl
def benchharness_methods():
    """Triplet ranking on patches tracked through video clips."""
    return [Method("tracking", "self-sup", ("video",), pretrain,
                   "siamese triplet ranking of patches tracked through video (Wang & Gupta 2015)")]
