"""Images streamed from disk (issue item 4): same pixels, same minibatches, same weights as the
in-memory path; trees past the in-memory limit are streamed; the choice of ``data`` mode."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from benchharness.data.loading import folders, streaming
from benchharness.data.loading.clip_cache import load_clips
from benchharness.data.loading.clip_stream import StreamedClips
from benchharness.data.loading.folders import list_image_folder, load_image_folder
from benchharness.data.loading.image_cache import decode_resized
from benchharness.data.loading.labelled import LabelledImages
from benchharness.data.loading.pretext_pool import default_image_dirs, load_images, open_image_pool, subset
from benchharness.data.loading.streaming import (DecodedImages, EpochBatches, StreamedImages, StreamLoader,
                                                 choose_data_mode)
from benchharness.interfaces import DataError, RunContext
from benchharness.plugins import Registry


def _source(world: Path) -> Path:
    return world / "source" / "train"


@pytest.mark.parametrize("workers", [0, 2])
def test_a_streamed_image_equals_the_cached_one_bit_for_bit(tiny_world, workers):
    paths, targets, _ = list_image_folder(_source(tiny_world))
    paths, targets = paths[:12], targets[:12]
    cached = decode_resized(paths, 40)
    loader = StreamLoader(DecodedImages(paths, 40, targets), streaming.InOrderBatches(12, 5), workers)
    streamed, labels = zip(*loader)
    assert [len(b) for b in streamed] == [5, 5, 2]
    assert torch.equal(torch.cat(streamed), cached)
    assert torch.cat(labels).tolist() == targets


def _in_memory_order(n, batch, steps, epochs, seed):
    """The index batches the in-memory loop drew: a randperm per epoch, then the crops' draws."""
    gen, epochs_seen = torch.Generator().manual_seed(seed), []
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        epochs_seen.append([order[s * batch:(s + 1) * batch].tolist() for s in range(steps)])
        torch.rand(steps, generator=gen)
    return epochs_seen


def test_streamed_minibatches_are_the_in_memory_loops_from_the_same_generator():
    gen = torch.Generator().manual_seed(5)
    sampler, seen = EpochBatches(37, 8, 4, gen), []
    for _ in range(3):
        seen.append(list(sampler))
        torch.rand(4, generator=gen)
    assert seen == _in_memory_order(37, 8, 4, 3, seed=5)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_delivers_that_order_through_its_workers(tiny_world, workers):
    paths = list_image_folder(_source(tiny_world))[0][:20]
    gen = torch.Generator().manual_seed(7)
    # targets = indices, so the batches tell which images they hold
    loader = StreamLoader(DecodedImages(paths, 8, range(20)), EpochBatches(20, 6, 3, gen), workers)
    seen = []
    for _ in range(3):
        seen.append([targets.tolist() for _, targets in loader])
        torch.rand(3, generator=gen)
    assert seen == _in_memory_order(20, 6, 3, 3, seed=7)


def test_data_mode_choice(monkeypatch):
    logs = []
    assert choose_data_mode("auto", 2400, 72, "small", logs.append) == "memory"  # the small world
    assert choose_data_mode("auto", 1_281_167, 255, "imagenet", logs.append) == "stream"
    assert choose_data_mode("memory", 1_281_167, 255, "x") == "memory"
    assert choose_data_mode("stream", 10, 72, "x") == "stream"
    monkeypatch.setattr(folders, "MAX_IN_MEMORY_IMAGES", 50)
    assert choose_data_mode("auto", 60, 8, "x") == "stream"  # few bytes, too many images
    assert logs[0].startswith("small: data = memory (2400 images")
    assert "imagenet: data = stream" in logs[1]
    with pytest.raises(ValueError, match="choose from"):
        choose_data_mode("disk", 1, 1, "x")


def _supervised_ctx(world, data, workers=2, epochs=2):
    return RunContext(torch.device("cpu"), 0, world, world, "alexnet-small",
                      config={"epochs": epochs, "batch_size": 16, "data": data,
                              "data_workers": workers}, log=lambda m: None)


def test_supervised_pretraining_streamed_trains_the_in_memory_weights(tiny_world):
    supervised = Registry().methods()["supervised"]
    memory = supervised.pretrain(_supervised_ctx(tiny_world, "memory"))
    stream = supervised.pretrain(_supervised_ctx(tiny_world, "stream"))
    assert (memory.meta["data"], stream.meta["data"]) == ("memory", "stream")
    for key, value in memory.network.state_dict().items():
        torch.testing.assert_close(stream.network.state_dict()[key], value, rtol=1e-5, atol=1e-6,
                                   msg=key)
    assert stream.meta["pretext"] == memory.meta["pretext"]


@pytest.fixture
def linked_tree(tiny_world, tmp_path):
    """60 images in 3 classes, every one a symlink to one of 3 real files of the tiny world."""
    real = list_image_folder(_source(tiny_world))[0][:3]
    root = tmp_path / "linked" / "train"
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(20):
            os.symlink(real[(c + i) % 3], root / f"class{c}" / f"img{i:03d}{real[0].suffix}")
    return root, real


def test_a_tree_past_the_in_memory_limit_is_refused_in_memory_and_streamed(linked_tree, monkeypatch):
    root, real = linked_tree
    monkeypatch.setattr(folders, "MAX_IN_MEMORY_IMAGES", 50)
    with pytest.raises(DataError, match='60 images exceed the in-memory limit of 50.*data = "stream"') as err:
        load_image_folder(root, 24)
    assert err.value.path == root
    with pytest.raises(DataError, match="in-memory limit"):
        LabelledImages(root, 24, "memory")

    logs = []
    tree = LabelledImages(root, 24, "auto", num_workers=2, log=logs.append, what="linked")
    assert tree.mode == "stream" and len(tree) == 60 and "data = stream" in logs[0]
    images, targets = zip(*tree.in_order(16))
    images, targets = torch.cat(images), torch.cat(targets)
    assert images.shape == (60, 3, 24, 24) and targets.tolist() == [c for c in range(3) for _ in range(20)]
    expected = decode_resized(real, 24)
    assert torch.equal(images[0], expected[0]) and torch.equal(images[21], expected[2])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_broken_image_in_stream_mode_names_the_file(linked_tree, workers):
    root, _ = linked_tree
    broken = root / "class1" / "img007.jpg"
    broken.unlink()
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    tree = LabelledImages(root, 24, "stream", num_workers=workers)
    with pytest.raises(DataError, match="cannot decode") as err:
        for _ in tree.in_order(16):
            pass
    assert err.value.path == broken


def test_a_streamed_pool_indexes_like_the_decoded_array(tiny_world, tmp_path):
    dirs = default_image_dirs(tiny_world)
    decoded = load_images(dirs, 32)
    logs = []
    streamed = open_image_pool(dirs, 32, "stream", 2, log=logs.append, what="pool")
    assert isinstance(streamed, StreamedImages) and "pool: data = stream" in logs[0]
    assert streamed.shape == decoded.shape
    idx = torch.tensor([5, 0, len(decoded) - 1, 5])
    assert torch.equal(streamed[idx], decoded[idx])
    assert torch.equal(streamed[3:9], decoded[3:9])
    view = subset(streamed, idx)
    assert len(view) == 4 and torch.equal(view[1:3], decoded[idx][1:3])
    assert torch.equal(subset(decoded, idx), decoded[idx])
    assert open_image_pool(dirs, 32, "auto").shape == decoded.shape  # a tiny pool: in memory


PRETEXT = {
    "context": {"steps": 2, "batch_size": 8, "eval_grids": 1},
    "colorization": {"steps": 2, "batch_size": 8},
    "bigan": {"steps": 2, "batch_size": 4, "generator_size": 16, "gen_channels": 8,
              "disc_channels": 8, "disc_hidden": 32, "z_dim": 8},
}


@pytest.mark.parametrize("name", sorted(PRETEXT))
def test_pretext_pretraining_streamed_trains_the_in_memory_weights(name, tiny_world, tmp_path):
    method = Registry().methods()[name]

    def run(data):
        logs = []
        ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path / data, "alexnet-small",
                         config={**PRETEXT[name], "data": data}, log=logs.append)
        rep = method.pretrain(ctx)
        assert any(f"{name} pool: data = {data}" in m for m in logs)
        return rep

    memory, stream = run("memory"), run("stream")
    for key, value in memory.network.state_dict().items():
        torch.testing.assert_close(stream.network.state_dict()[key], value, rtol=1e-5, atol=1e-6,
                                   msg=key)
    assert stream.meta["pretext"] == memory.meta["pretext"]


def test_streamed_clips_index_like_the_decoded_frames(tiny_world):
    folder = tiny_world / "clips"
    decoded = load_clips(folder, 4, 32).frames
    streamed = load_clips(folder, 4, 32, stream=True, threads=2).frames
    assert isinstance(streamed, StreamedClips) and streamed.shape == tuple(decoded.shape)
    rows, cols = torch.tensor([3, 0, 3, 1]), torch.tensor([1, 2, 0, 3])
    assert torch.equal(streamed[rows, cols], decoded[rows, cols])
    assert torch.equal(streamed[2], decoded[2])
    view = streamed[torch.tensor([4, 1])]
    chosen = np.array([0, 3])
    assert len(view) == 2 and torch.equal(view[:, chosen], decoded[torch.tensor([4, 1])][:, chosen])
    assert np.array_equal(streamed.numpy()[5], decoded.numpy()[5])


CLIP_METHODS = {
    "tracking": {"epochs": 2, "warmup_epochs": 1, "batch_size": 8, "held_out": 0.2},
    "sound": {"epochs": 2, "batch_size": 8, "clusters": 4, "bits": 4, "held_out": 0.2},
}


@pytest.mark.parametrize("name", sorted(CLIP_METHODS))
def test_clip_pretraining_streamed_trains_the_in_memory_weights(name, tiny_world, tmp_path):
    method = Registry().methods()[name]

    def run(data):
        logs = []
        ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path / data, "alexnet-small",
                         config={**CLIP_METHODS[name], "data": data}, log=logs.append)
        torch.manual_seed(1234)  # a different global state each time: the method seeds itself
        torch.rand(int(data == "stream") + 1)
        rep = method.pretrain(ctx)
        assert any(f"{name} clips: data = {data}" in m for m in logs)
        return rep

    memory, stream = run("memory"), run("stream")
    for key, value in memory.network.state_dict().items():
        torch.testing.assert_close(stream.network.state_dict()[key], value, rtol=1e-5, atol=1e-6,
                                   msg=key)
    assert stream.meta["pretext"] == memory.meta["pretext"]


def test_a_format_torchvision_does_not_read_is_decoded_by_pil_on_both_paths(tmp_path):
    from PIL import Image
    pixels = (np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)
    paths = []
    for fmt in ("bmp", "tiff"):
        paths.append(tmp_path / f"image.{fmt}")
        Image.fromarray(pixels).save(paths[-1])
    cached = decode_resized(paths, 16)
    streamed = torch.cat([images for images, _ in StreamLoader(DecodedImages(paths, 16),
                                                               streaming.InOrderBatches(2, 2), 0)])
    assert torch.equal(streamed, cached) and torch.equal(cached[0], cached[1])
