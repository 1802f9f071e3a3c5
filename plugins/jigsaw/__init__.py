"""``jigsaw``: solving jigsaw puzzles (Noroozi & Favaro 2016, "Unsupervised Learning of Visual
Representations by Solving Jigsaw Puzzles"), group ``self-sup``.

An image crop is split into 3 x 3 cells and one tile is cut from each at a random offset inside
its cell (so tiles are separated by a gap and jittered); the 9 tiles are shuffled by one of N
permutations of a maximal-Hamming-distance set (:mod:`benchharness_plugins.jigsaw.permutations`,
N = ``permutations``, 10 by default against the paper's 1000: at the synthetic scale 100 do not
leave the loss plateau at ln N within the budget) and the network names which.
The context-free network: every tile goes alone through the shared trunk up to fc6 (a siamese
network of 9 branches), the 9 fc6 vectors are concatenated in their shuffled order, then a new fc
layer (the paper's fc7) and the N-way softmax (fc8). Against shortcuts, as the paper: each tile
is normalised to zero mean and unit standard deviation per channel on its own, each of its colour
channels is cut from a position jittered by up to ``channel_jitter`` pixels (chromatic
aberration), and a share ``grayscale`` of the tiles (0.3, as the authors' PyTorch code) is
grey. Tiles are cut at the trunk's ``tile_input`` pixels (half the backbone's input side, as
``context``'s patches; the paper's 64 px tiles from 75 px cells enter its CFN at 64). The trunk
is handed over with the default ImageNet input convention, at whose scale the standardised tiles
roughly are.

Learned stages: conv1..conv5 and fc6 (the head is the pretext's only); at the end they get back
their output scale at initialisation (:func:`~benchharness.data.loading.pretext_pool.restore_scales_on`).
The pretext measurement is the permutation accuracy on puzzles of held-out images (fixed seed),
against chance 1/N and the untrained network's figure (``value_at_init``). Training state is
saved every ``checkpoint_every`` steps, so a killed pretraining resumes.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from torch.nn import functional as F

from benchharness import hookimpl
from benchharness.accel import prepare_model
from benchharness.backbones import CONV_STAGES
from benchharness.data.loading.pretext_pool import (default_image_dirs, open_image_pool,
                                                    restore_scales_on, split_held_out, subset)
from benchharness.data.loading.transforms import center_crop_batch, random_crop_batch
from benchharness.interfaces import Method, RunContext
from benchharness.representation import InputConvention, Representation
from benchharness.training import PretextSteps
from .permutations import maximal_hamming_permutations
from .puzzles import GRID, make_puzzles

# Defaults at the synthetic world's scale; the paper's settings in comments and in
# benchmarks/voc-transfer.toml.
DEFAULTS = {
    "data": "auto", "data_workers": 2,  # pool in memory, streamed from disk, or by size
    "steps": 600, "batch_size": 32,     # paper: 350k iterations of 256 puzzles
    "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,  # paper: SGD, lr 0.01
    "permutations": 10,        # paper: 1000; 100 stays at chance for 600 steps here
    "criterion": "min",        # "min": max-min Hamming distance; "sum": Algorithm 1 as printed
    "tile_input": None,        # None: half the backbone's input side (paper: 64 px tiles)
    "cell_ratio": 0.85,        # tile / cell side (paper: 64 / 75)
    "channel_jitter": 1,       # pixels (paper: up to 2 at 64 px tiles)
    "grayscale": 0.3,          # share of grey tiles
    "hidden": 512,             # the head's fc7 width (paper: 4096)
    "crop_scale": (0.6, 1.0),
    "held_out": 0.1, "eval_rounds": 2, "image_dirs": None, "seed": 0,
    "checkpoint_every": 100, "restore_scale": True,
}
LEARNED = CONV_STAGES + ("fc6",)
CONVENTION = InputConvention()


def _settings(ctx: RunContext, input_size: int) -> dict:
    unknown = set(ctx.config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"jigsaw: unknown settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **ctx.config}
    cfg["tile_input"] = int(cfg["tile_input"] or input_size // 2)
    for key in ("steps", "batch_size", "checkpoint_every", "permutations", "eval_rounds", "hidden"):
        if int(cfg[key]) < 1:
            raise ValueError(f"jigsaw: {key} must be at least 1, not {cfg[key]!r}")
    if not 0 < float(cfg["cell_ratio"]) <= 1:
        raise ValueError(f"jigsaw: cell_ratio must be in (0, 1], not {cfg['cell_ratio']!r}")
    cell = round(cfg["tile_input"] / float(cfg["cell_ratio"])) + 2 * int(cfg["channel_jitter"])
    cfg["puzzle_size"] = GRID * cell
    return cfg


class JigsawNet(nn.Module):
    """The context-free network: the shared trunk through fc6 on each of the 9 tiles, their fc6
    vectors concatenated, then fc7 and the N-way permutation logits."""

    def __init__(self, trunk: nn.Module, permutations: int, hidden: int):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential(nn.Linear(GRID * GRID * trunk.spec.fc_dim, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, permutations))

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        b = len(tiles)
        features = self.trunk.forward_to(tiles.flatten(0, 1), "fc6")
        return self.head(features.view(b, -1))


def pretrain(ctx: RunContext) -> Representation:
    """Train the context-free network on permutation classification; returns conv1..fc6."""
    torch.manual_seed(ctx.seed)
    network = ctx.build_backbone()
    size = network.spec.input_size
    cfg = _settings(ctx, size)
    tile = cfg["tile_input"]
    try:
        with torch.no_grad():
            network.forward_to(torch.zeros(1, 3, tile, tile), "fc6")
    except RuntimeError as exc:
        raise ValueError(f"jigsaw: tile_input {tile} is too small for the {ctx.backbone} trunk ({exc})") from None
    perms = torch.from_numpy(maximal_hamming_permutations(int(cfg["permutations"]), GRID * GRID, int(cfg["seed"]),
                                                          cfg["criterion"]))
    initial = copy.deepcopy(network)  # the scale the learned stages are given back at the end
    dirs = cfg["image_dirs"] or default_image_dirs(ctx.data_root)
    images = open_image_pool(dirs, cfg["puzzle_size"], cfg["data"], cfg["data_workers"], ctx.progress,
                             ctx.cache_dir, ctx.log, "jigsaw pool")
    train_idx, held_idx = split_held_out(len(images), cfg["held_out"], ctx.seed)
    model = prepare_model(JigsawNet(network, len(perms), int(cfg["hidden"])), ctx.device)
    untrained = copy.deepcopy(model)  # for value_at_init
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                          weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg["lr"], total_steps=cfg["steps"], pct_start=0.2)
    gen = torch.Generator().manual_seed(ctx.seed)
    loop = PretextSteps(ctx, "jigsaw", cfg["steps"], cfg["checkpoint_every"],
                        {"model": model, "opt": opt, "sched": sched}, gen)
    start = time.perf_counter()
    model.train()
    for _ in loop:
        idx = train_idx[torch.randint(len(train_idx), (cfg["batch_size"],), generator=gen)]
        crops = random_crop_batch(images[idx], cfg["puzzle_size"], gen, scale=tuple(cfg["crop_scale"]))
        tiles, labels = make_puzzles(crops, perms, tile, tile, cfg, gen)
        loss = F.cross_entropy(model(tiles.to(ctx.device)), labels.to(ctx.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loop.record(loss)
    train_seconds = time.perf_counter() - start
    held = subset(images, held_idx)[:]
    pretext = held_out_accuracy(model, held, perms, cfg, ctx)
    if pretext is not None:
        pretext["value_at_init"] = held_out_accuracy(untrained, held, perms, cfg, ctx)["value"]
    scale = (restore_scales_on(network, initial, held[:256], CONVENTION, LEARNED, ctx.device)
             if cfg["restore_scale"] else None)
    return Representation(network.cpu(), ctx.backbone, CONVENTION, learned_stages=LEARNED, meta={
        "pretrain_data": [str(d) for d in dirs], "pretrain_images": len(train_idx),
        "train_seconds": train_seconds, "pretext": pretext, "final_loss": loop.running.get("loss"),
        "scale_restored": scale, "permutations": len(perms), "criterion": cfg["criterion"],
        "tile_input": tile, "puzzle_size": cfg["puzzle_size"]})


@torch.no_grad()
def held_out_accuracy(model: JigsawNet, images: torch.Tensor, perms: torch.Tensor, cfg: dict,
                      ctx: RunContext) -> dict | None:
    """Permutation accuracy on ``eval_rounds`` puzzles per held-out image (centre crops, tiles,
    permutations and grey tiles drawn from one fixed seed, so every network sees the same)."""
    if len(images) == 0:
        return None
    model.eval()
    gen = torch.Generator().manual_seed(12_345)
    crops = center_crop_batch(images, cfg["puzzle_size"], fraction=1.0)
    correct = total = 0
    for _ in range(int(cfg["eval_rounds"])):
        for s in range(0, len(crops), 64):
            tiles, labels = make_puzzles(crops[s:s + 64], perms, cfg["tile_input"], cfg["tile_input"], cfg, gen)
            correct += (model(tiles.to(ctx.device)).argmax(1).cpu() == labels).sum().item()
            total += len(labels)
    return {"metric": "permutation-accuracy", "value": correct / total, "chance": 1 / len(perms),
            "held_out_puzzles": total}


@hookimpl
def benchharness_methods():
    """Jigsaw puzzles on unlabelled images."""
    return [Method("jigsaw", "self-sup", ("images",), pretrain,
                   "jigsaw puzzles: which of N permutations shuffled 9 tiles (Noroozi & Favaro 2016)")]
