"""Jigsaw puzzles: the permutation set, tile cutting and shuffling, a tiny pretraining."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from benchharness.interfaces import RunContext
from benchharness.plugins import Registry
from benchharness.representation import Representation
from benchharness_plugins import jigsaw
from benchharness_plugins.jigsaw.permutations import (maximal_hamming_permutations, min_hamming_distance,
                                                      shuffle_tiles, unshuffle_tiles)
from benchharness_plugins.jigsaw.puzzles import cut_tiles, make_puzzles, normalise_tiles

TINY = {"steps": 3, "batch_size": 2, "permutations": 10, "hidden": 16, "checkpoint_every": 2,
        "eval_rounds": 1}


def _ctx(world, tmp_path, config, progress=None, log=print, state="state"):
    return RunContext(torch.device("cpu"), 0, world, tmp_path / "cache", "alexnet-small", config=config,
                      state_dir=tmp_path / state, progress=progress, log=log)


def test_permutation_set_has_the_max_min_hamming_distance_and_is_seeded():
    perms = maximal_hamming_permutations(100, seed=0)
    assert perms.shape == (100, 9)
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())  # each a permutation
    assert len({tuple(p) for p in perms.tolist()}) == 100
    # the greedy max-min choice keeps every pair at least 6 apart for N = 100 (9 tiles)
    assert min_hamming_distance(perms) == 6
    assert np.array_equal(perms, maximal_hamming_permutations(100, seed=0))
    assert not np.array_equal(perms[:20], maximal_hamming_permutations(20, seed=1))
    # a 2-permutation set is 9 apart (a derangement), whatever the seed
    assert min_hamming_distance(maximal_hamming_permutations(2, seed=5)) == 9


def test_min_hamming_distance_by_hand():
    perms = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [3, 2, 1, 0]])
    assert min_hamming_distance(perms) == 2  # the first two differ in two places


def test_sum_criterion_is_algorithm_1_and_bad_settings_are_refused():
    perms = maximal_hamming_permutations(20, seed=0, criterion="sum")
    assert len({tuple(p) for p in perms.tolist()}) == 20
    with pytest.raises(ValueError, match="criterion"):
        maximal_hamming_permutations(5, criterion="max")
    with pytest.raises(ValueError, match="permutations must be in 1..362880"):
        maximal_hamming_permutations(0)


def test_tile_shuffle_then_inverse_permutation_restores_the_image():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 12, 12, generator=g)
    tiles = cut_tiles(images, 4, g, random_offsets=False)  # cells of 4: the tiles are the cells
    reassembled = tiles.view(5, 3, 3, 3, 4, 4).permute(0, 3, 1, 4, 2, 5).reshape(5, 3, 12, 12)
    assert torch.equal(reassembled, images)
    perms = torch.from_numpy(maximal_hamming_permutations(5, seed=0))
    shuffled = shuffle_tiles(tiles, perms)
    assert torch.equal(shuffled[2, 0], tiles[2, perms[2, 0]])  # output tile i is input tile perm[i]
    assert not torch.equal(shuffled, tiles)
    assert torch.equal(unshuffle_tiles(shuffled, perms), tiles)


def test_tiles_sit_inside_their_cells_with_jittered_channels():
    side, tile = 30, 6
    # each pixel's value says its position: a tile's values tell where it was cut
    positions = torch.arange(side * side, dtype=torch.float32).view(1, 1, side, side).expand(2, 3, side, side)
    tiles = cut_tiles(positions, tile, torch.Generator().manual_seed(0), channel_jitter=1)
    assert tiles.shape == (2, 9, 3, tile, tile)
    rows, cols = tiles[..., 0, 0] // side, tiles[..., 0, 0] % side  # each tile's top-left corner
    cell_row = torch.arange(9) // 3 * 10
    cell_col = torch.arange(9) % 3 * 10
    assert ((rows >= cell_row[None, :, None]) & (rows + tile <= cell_row[None, :, None] + 10)).all()
    assert ((cols >= cell_col[None, :, None]) & (cols + tile <= cell_col[None, :, None] + 10)).all()
    assert ((rows.amax(2) - rows.amin(2)) <= 2).all()  # channels at most 2 apart
    with pytest.raises(ValueError, match="does not fit a cell"):
        cut_tiles(positions, 9, torch.Generator(), channel_jitter=1)


def test_each_tile_is_normalised_on_its_own():
    tiles = torch.rand(2, 9, 3, 8, 8) * 5 + 3
    out = normalise_tiles(tiles, eps=0.0)
    torch.testing.assert_close(out.mean((-2, -1)), torch.zeros(2, 9, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std((-2, -1)), torch.ones(2, 9, 3), atol=1e-5, rtol=0)


def test_make_puzzles_labels_index_the_permutation_set():
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(6, 3, 60, 60, generator=g) * 255).to(torch.uint8)
    perms = torch.from_numpy(maximal_hamming_permutations(7, seed=0))
    tiles, labels = make_puzzles(images, perms, 16, 32, {"channel_jitter": 1, "grayscale": 0.3}, g)
    assert tiles.shape == (6, 9, 3, 32, 32) and labels.min() >= 0 and labels.max() < 7


def test_tiny_pretraining_gives_a_loadable_representation_with_its_pretext(tiny_world, tmp_path):
    rep = jigsaw.pretrain(_ctx(tiny_world, tmp_path, TINY))
    assert rep.learned_stages == ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6")
    pretext = rep.meta["pretext"]
    assert pretext["metric"] == "permutation-accuracy" and pretext["chance"] == pytest.approx(0.1)
    assert 0 <= pretext["value"] <= 1 and 0 <= pretext["value_at_init"] <= 1
    assert pretext["held_out_puzzles"] == 10
    loaded = Representation.load(rep.save(tmp_path / "rep"))
    assert loaded.learned_stages == rep.learned_stages


def test_pretraining_resumes_from_its_checkpoint(tiny_world, tmp_path):
    from test_context import killed_after
    full = jigsaw.pretrain(_ctx(tiny_world, tmp_path, TINY, state="a"))
    with pytest.raises(KeyboardInterrupt):
        jigsaw.pretrain(_ctx(tiny_world, tmp_path, TINY, progress=killed_after(2), state="b"))
    logs = []
    resumed = jigsaw.pretrain(_ctx(tiny_world, tmp_path, TINY, log=logs.append, state="b"))
    assert any("resuming jigsaw pretraining at step 3" in line for line in logs)
    for key, value in full.network.state_dict().items():
        assert torch.allclose(value, resumed.network.state_dict()[key], atol=1e-5), key
    assert resumed.meta["pretext"]["value"] == full.meta["pretext"]["value"]


def test_settings_errors_name_the_setting(tiny_world, tmp_path):
    for config, match in (({"tiles": 4}, "unknown settings"), ({"permutations": 0}, "permutations"),
                          ({"tile_input": 8}, "tile_input 8 is too small")):
        with pytest.raises(ValueError, match=match):
            jigsaw.pretrain(_ctx(tiny_world, tmp_path, config))


def test_method_is_registered_through_its_entry_point():
    registry = Registry()
    assert registry.sources["jigsaw"].startswith("entry point benchharness_plugins.jigsaw")
    assert registry.methods()["jigsaw"].group == "self-sup"
