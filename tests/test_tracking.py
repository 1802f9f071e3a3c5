"""Tracking (Wang & Gupta 2015): mining and tracking on synthetic clips, the loss, a tiny pretraining."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from benchharness.backbones import STAGES
from benchharness.data.loading.video import write_clip
from benchharness.data.synthetic.clips import ClipSize, make_clip
from benchharness.data.synthetic.world import _rng
from benchharness.data.voc.classes import VOC_CLASSES
from benchharness.interfaces import DataError, RunContext
from benchharness.plugins import Registry
from benchharness.representation import Representation
from benchharness.training import EpochCheckpoint
from benchharness_plugins import tracking
from benchharness_plugins.tracking.tracks import mine_pairs, moving_boxes, square_patch, track_box

SIZE = ClipSize(clips=0, frames=16, side=96, fps=16)
MOVERS = ["aeroplane", "bicycle", "bus", "car", "cat", "dog", "horse", "motorbike", "person", "train",
          "boat", "pottedplant"]


def _xywh(box):
    """VOC box (1-based inclusive) -> OpenCV (x, y, w, h), 0-based."""
    return (box[0] - 1, box[1] - 1, box[2] - box[0] + 1, box[3] - box[1] + 1)


def _iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


@pytest.fixture(scope="module")
def moving_clips():
    """Two clips of each moving class (decoded frames would do as well: tracking is on pixels),
    without occluders: these tests measure the tracker against the object's true box, which an
    occluder crossing it cuts (the occluded clips are the pretext's business, not the tracker's)."""
    return [make_clip(_rng(21, 5, i), VOC_CLASSES.index(name), SIZE, occlude=False)
            for i, name in enumerate(MOVERS * 2)]


@pytest.mark.parametrize("tracker, needed", [("template", 0.85), ("kcf", 0.6)])
def test_tracked_box_follows_the_object(moving_clips, tracker, needed):
    ious = []
    for clip in moving_clips:
        start, stop = 3, 11
        first, last = clip.boxes[0][start], clip.boxes[0][stop]
        if first is None or last is None:
            continue
        found = track_box(clip.frames, start, _xywh(first), stop, tracker)
        ious.append(0.0 if found is None else _iou(found, _xywh(last)))
    ious = np.array(ious)
    assert len(ious) >= 20
    assert np.mean(ious > 0.5) >= needed, ious.round(2)


def test_mined_moving_boxes_find_the_moving_objects(moving_clips):
    hits = []
    for clip in moving_clips:
        truths = [_xywh(b[5]) for b in clip.boxes if b[5] is not None]
        for box in moving_boxes(clip.frames, 5):
            hits.append(max(_iou(box, t) for t in truths))
    assert len(hits) >= len(moving_clips)
    assert np.mean(np.array(hits) > 0.5) > 0.6 and np.median(hits) > 0.6


def test_still_objects_give_no_pairs():
    clip = make_clip(_rng(2, 5, 0), VOC_CLASSES.index("bottle"), SIZE)
    if len(clip.classes) > 1 or clip.occluder_boxes:  # keep a clip with the bottle alone
        clip = next(c for c in (make_clip(_rng(2, 5, i), VOC_CLASSES.index("bottle"), SIZE)
                                for i in range(1, 40)) if len(c.classes) == 1 and not c.occluder_boxes)
    assert moving_boxes(clip.frames, 5) == []
    assert len(mine_pairs(clip.frames[None])) == 0


@pytest.mark.parametrize("tracker, detector", [("template", "median"), ("kcf", "difference")])
def test_mined_pairs_are_square_patches_in_the_frame(moving_clips, tracker, detector):
    clips = np.stack([c.frames for c in moving_clips[:6]])
    pairs = mine_pairs(clips, queries_per_clip=2, track_frames=8, tracker=tracker, detector=detector)
    assert len(pairs) >= 6
    for boxes in (pairs.query, pairs.tracked):
        assert np.allclose(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        assert (boxes >= 0).all() and (boxes <= 96).all()
    assert (pairs.tracked_frame - pairs.query_frame == 8).all()


def test_square_patch_is_shifted_into_the_frame():
    assert square_patch((90, 40, 10, 4), (96, 96), context=2.0) == (76.0, 32.0, 96.0, 52.0)
    assert square_patch((0, 0, 4, 4), (96, 96), min_side=16) == (0.0, 0.0, 16.0, 16.0)


def test_triplet_loss_by_hand():
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    t = torch.tensor([[0.6, 0.8], [0.6, 0.8]])
    n = torch.tensor([[0.0, 1.0], [0.8, 0.6]])
    # D(q, t) = 0.4; D(q, n) = 1.0 -> max(0, 0.4 - 1.0 + 0.5) = 0; D(q, n) = 0.2 -> 0.7
    assert torch.allclose(tracking.cosine_distance(q, t), torch.tensor([0.4, 0.4]))
    assert tracking.triplet_ranking_loss(q, t, n, 0.5).item() == pytest.approx(0.35)
    assert tracking.triplet_ranking_loss(q, t, n, 0.0).item() == pytest.approx(0.1)
    # scale does not matter for the cosine distance
    assert tracking.triplet_ranking_loss(3 * q, 2 * t, 5 * n, 0.5).item() == pytest.approx(0.35)


def test_batch_loss_gradient_is_the_same_every_time_with_shared_negatives():
    # Several queries share one negative; the old tracked[negative] indexing accumulated its
    # gradient in a thread-dependent order, so identical runs drifted apart.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        query = torch.nn.functional.normalize(torch.randn(64, 1024, generator=g), dim=1)
        tracked = torch.nn.functional.normalize(torch.randn(64, 1024, generator=g), dim=1)
        negative = torch.randint(0, 4, (64,), generator=g)
        negative[:3] = -1  # queries without a negative are left out

        def gradient():
            t = tracked.clone().requires_grad_()
            tracking.batch_triplet_loss(query, t, negative, margin=2.0).backward()
            return t.grad

        first = gradient()
        assert all(torch.equal(first, gradient()) for _ in range(100))
        keep = negative >= 0
        expected = tracking.triplet_ranking_loss(query[keep], tracked[keep], tracked[negative[keep]], 2.0)
        assert torch.allclose(tracking.batch_triplet_loss(query, tracked, negative, 2.0), expected)
        assert tracking.batch_triplet_loss(query, tracked, torch.full((64,), -1), 2.0) is None
    finally:
        torch.set_num_threads(threads)


def test_negatives_come_from_other_clips_and_hard_ones_are_the_closest():
    gen = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(12, 8, generator=gen), dim=1)
    clip = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    for hard in (False, True):
        neg = tracking.choose_negatives(emb, emb, clip, 3, hard, gen)
        assert (neg >= 0).all() and (clip[neg] != clip).all()
    hardest = tracking.choose_negatives(emb, emb, clip, 12, True, gen)
    similarity = (emb @ emb.T).masked_fill(clip[:, None] == clip[None], -2)
    assert torch.equal(hardest, similarity.argmax(1))
    alone = tracking.choose_negatives(emb[:2], emb[:2], clip[:2], 3, True, gen)
    assert (alone == -1).all()


def _ctx(world, tmp_path, config, state_dir=None, factory=None):
    return RunContext(torch.device("cpu"), 0, world, tmp_path / "cache", "alexnet-small", config=config,
                      state_dir=state_dir, backbone_factory=factory, log=lambda m: None)


FAST = {"epochs": 2, "warmup_epochs": 1, "batch_size": 8, "held_out": 0.2}


def test_tiny_pretraining_gives_a_loadable_representation(tiny_world, tmp_path):
    built = {}

    def factory(in_channels=3):
        from benchharness.backbones import build
        built["net"] = build("alexnet-small", in_channels)
        built["init"] = {k: v.clone() for k, v in built["net"].state_dict().items()}
        return built["net"]

    rep = tracking.pretrain(_ctx(tiny_world, tmp_path, FAST, factory=factory))
    assert rep.network is built["net"] and rep.learned_stages == STAGES
    state = rep.network.state_dict()
    for key in ("conv1.conv.weight", "fc7.fc.weight"):  # trained by the pretext, fc7 included
        assert not torch.equal(state[key], built["init"][key])
    assert set(state) == set(built["init"])  # the embedding head is not exported
    pretext = rep.meta["pretext"]
    assert pretext["metric"] == "triplet-ranking-accuracy (pixel-hard negatives)" and pretext["chance"] == 0.5
    assert 0.0 <= pretext["value"] <= 1.0 and pretext["held_out_triplets"] > 0
    assert pretext["held_out_triplets"] <= pretext["hard_negatives"] * pretext["held_out_pairs"]
    for key in ("value_at_init", "value_all_negatives_at_init", "top1_retrieval_at_init"):
        assert 0.0 <= pretext[key] <= 1.0, key
    assert rep.meta["tracked_pairs"] > 10 and rep.meta["embedding_dim"] == 1024
    loaded = Representation.load(rep.save(tmp_path / "rep"))
    assert loaded.learned_stages == STAGES and loaded.meta["pretext"] == pretext
    for key, value in state.items():
        assert torch.equal(loaded.network.state_dict()[key], value)


def test_killed_pretraining_resumes_identically(tiny_world, tmp_path, monkeypatch):
    config = {**FAST, "epochs": 3}
    reference = tracking.pretrain(_ctx(tiny_world, tmp_path, config))
    real_save = EpochCheckpoint.save

    def killed(self, state):
        real_save(self, state)
        raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(EpochCheckpoint, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        tracking.pretrain(_ctx(tiny_world, tmp_path, config, tmp_path / "state"))
    monkeypatch.setattr(EpochCheckpoint, "save", real_save)
    resumed = tracking.pretrain(_ctx(tiny_world, tmp_path, config, tmp_path / "state"))
    for key, value in reference.network.state_dict().items():
        assert torch.equal(resumed.network.state_dict()[key], value), key
    assert resumed.meta["pretext"]["value_at_init"] == reference.meta["pretext"]["value_at_init"]  # the fresh network's


def test_settings_errors(tiny_world, tmp_path):
    with pytest.raises(ValueError, match="unknown settings \\['epoch'\\]"):
        tracking.pretrain(_ctx(tiny_world, tmp_path, {"epoch": 1}))
    with pytest.raises(ValueError, match="tracker must be one of"):
        tracking.pretrain(_ctx(tiny_world, tmp_path, {"tracker": "magic"}))
    with pytest.raises(DataError, match="video_dir: folder not found"):
        tracking.pretrain(_ctx(tiny_world, tmp_path, {"video_dir": str(tmp_path / "nowhere")}))


def test_clips_without_motion_are_refused_with_a_reason(tmp_path):
    folder = tmp_path / "still"
    folder.mkdir()
    frame = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    for i in range(3):
        write_clip(folder / f"s{i}.mp4", np.repeat(frame[None], 16, 0), None, 16, 16000)
    with pytest.raises(DataError, match="too little motion"):
        tracking.pretrain(_ctx(tmp_path, tmp_path, {"video_dir": str(folder), "held_out": 0.3}))


def test_method_is_registered_through_its_entry_point():
    registry = Registry()
    assert registry.sources["tracking"].startswith("entry point benchharness_plugins.tracking")
    method = registry.methods()["tracking"]
    assert method.group == "self-sup" and method.needs == ("video",)


def test_pixel_hard_negatives_by_hand():
    # thumbnails on a line: queries of clips 0, 0, 1, 2; tracked patches at the same places
    thumbs = torch.tensor([[0.0], [1.0], [1.5], [5.0]])
    clip = torch.tensor([0, 0, 1, 2])
    mask = tracking.pixel_hard_negatives(thumbs, thumbs, clip, 1)
    # each query's nearest tracked patch of another clip: 1.5, 1.5, 1.0 (clip 0), 1.5
    assert mask.tolist() == [[False, False, True, False], [False, False, True, False],
                             [False, True, False, False], [False, False, True, False]]
    two = tracking.pixel_hard_negatives(thumbs, thumbs, clip, 2)
    assert two.sum(1).tolist() == [2, 2, 2, 2] and not (two & (clip[:, None] == clip[None, :])).any()
    # more negatives asked for than there are patches of other clips: only those
    assert tracking.pixel_hard_negatives(thumbs, thumbs, clip, 9).sum(1).tolist() == [2, 2, 3, 3]


def test_untrained_network_does_not_solve_the_held_out_test_with_hard_negatives(tmp_path):
    """Raw pixels (and the untrained network, close to them) must not solve the pretext: with
    pixel-hard negatives the untrained embedding ranks clearly below perfectly. Clips of the tiny
    world's size and seed, three per class (the tiny world has one, so no negative of its class)."""
    from benchharness.backbones import build
    from benchharness.data.synthetic.clips import CLIP_SIZES
    from benchharness.representation import InputConvention

    frames = torch.from_numpy(np.stack([make_clip(_rng(3, 5, i), i % 20, CLIP_SIZES["tiny"]).frames
                                        for i in range(60)]))
    pairs = mine_pairs(frames.numpy())
    assert len(np.unique(pairs.clip)) >= 40
    torch.manual_seed(0)
    model = tracking.TripletNet(build("alexnet-small"), 1024)
    ctx = RunContext(torch.device("cpu"), 0, tmp_path, tmp_path, "alexnet-small")
    result = tracking.held_out_accuracy(model, frames, pairs, 64, InputConvention(), ctx)
    assert result["value"] < 0.9, result  # 0.85 measured
    assert result["value_all_negatives"] > result["value"] + 0.05, result  # the easy version: 0.92
    assert result["held_out_triplets"] == 5 * len(pairs)
