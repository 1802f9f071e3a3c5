"""Jigsaw puzzles from images (Noroozi & Favaro 2016): 3 x 3 cells, one tile per cell with a
random offset inside it (the gap between tiles and their jitter), the shortcuts' countermeasures
(per-channel spatial jitter against chromatic aberration, grayscale tiles, per-tile
normalisation), and the tile order of a permutation."""

from __future__ import annotations

import torch

from .permutations import shuffle_tiles

GRID = 3


def cut_tiles(images: torch.Tensor, tile: int, generator: torch.Generator, channel_jitter: int = 0,
              random_offsets: bool = True) -> torch.Tensor:
    """Tiles [B, 9, C, tile, tile] of ``images`` [B, C, S, S] in row-major cell order: the side is
    cut into 3 cells of S // 3 and each tile sits at a random offset inside its cell (centred with
    ``random_offsets`` False). With ``channel_jitter`` j, each channel of a tile is cut from its
    own position, shifted by up to j pixels (the paper's jitter of the colour channels against
    chromatic aberration); offsets stay inside the cell."""
    b, c, side, _ = images.shape
    cell = side // GRID
    if tile + 2 * channel_jitter > cell:
        raise ValueError(f"jigsaw: a tile of {tile} px (+2 x {channel_jitter} px channel jitter) does not "
                         f"fit a cell of {cell} px (images of {side} px)")
    room = cell - tile - 2 * channel_jitter
    if random_offsets:
        offsets = torch.randint(0, room + 1, (b, GRID * GRID, 2), generator=generator)
    else:
        offsets = torch.full((b, GRID * GRID, 2), room // 2)
    shift = torch.zeros(b, GRID * GRID, c, 2, dtype=torch.long)
    if channel_jitter:
        shift = torch.randint(-channel_jitter, channel_jitter + 1, (b, GRID * GRID, c, 2), generator=generator)
    cells = torch.arange(GRID * GRID)
    corner = torch.stack([cells // GRID, cells % GRID], 1) * cell + channel_jitter  # [9, 2]
    start = corner[None, :, None, :] + offsets[:, :, None, :] + shift  # [B, 9, C, 2]
    steps = torch.arange(tile)
    ys = (start[..., 0, None] + steps)[..., :, None]  # [B, 9, C, tile, 1]
    xs = (start[..., 1, None] + steps)[..., None, :]  # [B, 9, C, 1, tile]
    bi = torch.arange(b).view(b, 1, 1, 1, 1)
    ci = torch.arange(c).view(1, 1, c, 1, 1)
    return images[tuple(i.to(images.device) for i in (bi, ci, ys, xs))]


def to_grayscale(tiles: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """A random share ``p`` of the tiles [B, 9, 3, h, w] (values in [0, 1]) turned grey (ITU-R
    601 luma in all three channels)."""
    chosen = (torch.rand(tiles.shape[:2], generator=generator) < p).to(tiles.device)
    if p <= 0 or not chosen.any():
        return tiles
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=tiles.dtype, device=tiles.device)
    grey = (tiles * weights.view(1, 1, 3, 1, 1)).sum(2, keepdim=True).expand_as(tiles)
    return torch.where(chosen[:, :, None, None, None], grey, tiles)


def normalise_tiles(tiles: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """Each tile's channels set to mean 0 and standard deviation 1 on their own (the paper
    normalises every tile independently, so that neighbouring tiles cannot be matched by their
    low-level statistics); ``eps`` keeps flat tiles finite."""
    mean = tiles.mean((-2, -1), keepdim=True)
    std = tiles.std((-2, -1), keepdim=True)
    return (tiles - mean) / (std + eps)


def make_puzzles(images: torch.Tensor, perms: torch.Tensor, tile: int, out_size: int, cfg: dict,
                 generator: torch.Generator):
    """Network-ready puzzles from uint8 images [B, 3, S, S]: shuffled, normalised tiles
    [B, 9, 3, out_size, out_size] and the index of each puzzle's permutation in ``perms``
    (drawn uniformly)."""
    labels = torch.randint(len(perms), (len(images),), generator=generator)
    x = images.float() / 255
    tiles = cut_tiles(x, tile, generator, int(cfg["channel_jitter"]), random_offsets=True)
    tiles = to_grayscale(tiles, float(cfg["grayscale"]), generator)
    tiles = shuffle_tiles(tiles, perms[labels])
    if out_size != tile:
        b = len(tiles)
        tiles = torch.nn.functional.interpolate(tiles.flatten(0, 1), size=(out_size, out_size), mode="bilinear",
                                                antialias=True, align_corners=False)
        tiles = tiles.view(b, GRID * GRID, 3, out_size, out_size)
    return normalise_tiles(tiles), labels
