"""The jigsaw puzzle's permutation set and tile shuffling (Noroozi & Favaro 2016).

The set is chosen greedily as in the paper's Algorithm 1 ("maximal" Hamming distance): the first
permutation at random, then, one at a time, the permutation of the 9 tiles farthest from those
already chosen, ties broken at random by the seeded generator, until N are chosen. "Farthest"
is ``criterion = "min"`` (the default: the largest minimum Hamming distance to the chosen set,
which guarantees the set's minimum distance) or ``"sum"`` (Algorithm 1 as printed, which scores
a candidate by its summed distance to the chosen set, D-bar = 1'D). The paper used N = 1000
(minimum distance 2, average 8.00); the synthetic scale uses fewer (the method's
``permutations`` setting).
"""

from __future__ import annotations

import functools

import numpy as np
import torch


@functools.lru_cache(maxsize=None)
def all_permutations(tiles: int) -> np.ndarray:
    """Every permutation of ``range(tiles)`` [tiles!, tiles] in lexicographic order."""
    if tiles == 1:
        return np.zeros((1, 1), dtype=np.int8)
    rest = all_permutations(tiles - 1)
    # for each first tile, the permutations of the others (rest's values skip over it)
    out = np.concatenate([np.hstack([np.full((len(rest), 1), first, dtype=np.int8),
                                      rest + (rest >= first).astype(np.int8)]) for first in range(tiles)])
    out.setflags(write=False)  # shared by every caller (cached)
    return out


def maximal_hamming_permutations(n: int, tiles: int = 9, seed: int = 0, criterion: str = "min") -> np.ndarray:
    """``n`` permutations of ``tiles`` tiles [n, tiles] chosen greedily, each new one the farthest
    (by ``criterion``, see the module) from those chosen before; deterministic for a ``seed``."""
    if criterion not in ("min", "sum"):
        raise ValueError(f"jigsaw: criterion must be 'min' or 'sum', not {criterion!r}")
    candidates = all_permutations(tiles)
    if not 1 <= n <= len(candidates):
        raise ValueError(f"jigsaw: permutations must be in 1..{len(candidates)} for {tiles} tiles, not {n}")
    columns = np.ascontiguousarray(candidates.T)  # one row per tile position: fast comparisons

    def distance(i: int) -> np.ndarray:
        out = np.zeros(len(candidates), dtype=np.int32)
        for position, value in enumerate(candidates[i]):
            out += columns[position] != value
        return out

    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(candidates)))]
    score = distance(chosen[0])  # min or sum of the distances to the chosen set
    score[chosen[0]] = -1
    for _ in range(n - 1):
        best = np.flatnonzero(score == score.max())
        pick = int(best[rng.integers(len(best))])
        chosen.append(pick)
        score = np.minimum(score, distance(pick)) if criterion == "min" else score + distance(pick)
        score[chosen] = -1  # never twice (under "sum" a chosen one may still score high)
    return candidates[chosen].astype(np.int64)


def min_hamming_distance(perms: np.ndarray) -> int:
    """The smallest Hamming distance between two permutations of the set."""
    distances = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    np.fill_diagonal(distances, perms.shape[1] + 1)
    return int(distances.min())


def shuffle_tiles(tiles: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Tiles [B, 9, ...] placed in the order of each row of ``perms`` [B, 9]: output tile i is
    input tile ``perms[b, i]``."""
    return torch.gather(tiles, 1, perms.view(*perms.shape, *([1] * (tiles.dim() - 2))).expand_as(tiles))


def unshuffle_tiles(shuffled: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`shuffle_tiles`: the tiles back in their original order."""
    return shuffle_tiles(shuffled, torch.argsort(perms, dim=1))
