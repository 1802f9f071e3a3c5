"""egomotion (Agrawal et al. 2015): the world's camera-motion sequences, the pose format reader,
the binned motion targets, the loss, resumable pretraining and a run on the tiny world."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from benchharness.backbones import CONV_STAGES
from benchharness.cli import main
from benchharness.data.synthetic.egomotion import (EGO_SIZES, EgoSize, ensure_egomotion, make_sequence,
                                                    render_view, write_sequence)
from benchharness.data.synthetic.world import _rng
from benchharness.interfaces import DataError, RunContext
from benchharness.plugins import Registry
from benchharness.representation import Representation
from benchharness.training import EpochCheckpoint
from benchharness_plugins import egomotion
from benchharness_plugins.egomotion.motion import (bin_edges, frame_pairs, motion_bins, relative_motion)
from benchharness_plugins.egomotion.sequences import decode_frame, list_sequences, read_poses

SMALL = EgoSize(sequences=1, frames=6, side=64, scene=192, step=3.0, turn=3.0)


def _pose_matrix(pose):
    """The camera-to-world map of a pose as a 3x3 homogeneous matrix (d -> t + R(rz) d)."""
    a = math.radians(pose[2])
    return np.array([[math.cos(a), -math.sin(a), pose[0]], [math.sin(a), math.cos(a), pose[1]], [0, 0, 1]])


def test_hand_made_pose_pairs_fall_in_the_hand_computed_bins():
    # camera turned 90 degrees: moving +2 along the world's y is moving +2 along its own x
    first = np.array([[0.0, 0.0, 90.0], [0.0, 0.0, 170.0], [5.0, 5.0, 0.0]])
    second = np.array([[0.0, 2.0, 97.0], [0.0, 0.0, -175.0], [-95.0, 5.0, 0.0]])
    motion = relative_motion(first, second)
    np.testing.assert_allclose(motion, [[2.0, 0.0, 7.0], [0.0, 0.0, 15.0], [-100.0, 0.0, 0.0]], atol=1e-12)
    edges = bin_edges(np.array([4.0, 4.0, 10.0]), 4)  # tx, ty: -4 -2 0 2 4; rz: -10 -5 0 5 10
    np.testing.assert_allclose(edges[0], [-4, -2, 0, 2, 4])
    # 2 opens bin 3 ([2, 4)); 0 opens bin 2; 7 in [5, 10); 15 and -100 beyond: end bins
    assert motion_bins(motion, edges).tolist() == [[3, 2, 3], [2, 2, 3], [0, 2, 2]]


def test_frame_pairs_stay_within_a_sequence_and_the_gap():
    pairs = frame_pairs(np.array([0, 3, 5]), max_gap=2)
    assert sorted(map(tuple, pairs.tolist())) == sorted([(0, 1), (1, 0), (1, 2), (2, 1), (0, 2), (2, 0),
                                                         (3, 4), (4, 3)])


def test_generated_frames_show_the_stored_motion_and_the_labels_bin_it(tmp_path):
    frames, poses = make_sequence(_rng(0, 7, 0), SMALL)
    write_sequence(tmp_path / "seq", frames, poses)
    (sequence,) = list_sequences(tmp_path)
    pairs = frame_pairs(np.array([0, len(poses)]), 3)
    motion = relative_motion(sequence.poses[pairs[:, 0]], sequence.poses[pairs[:, 1]])
    edges = bin_edges(np.array([6.0, 6.0, 6.0]), 5)
    labels = motion_bins(motion, edges)
    centre = slice(16, 48)
    for (i, j), m, label in zip(pairs, motion, labels):
        # independently: the pose of frame j in frame i's camera, A_i^-1 A_j
        rel = np.linalg.inv(_pose_matrix(poses[i])) @ _pose_matrix(poses[j])
        truth = [rel[0, 2], rel[1, 2], math.degrees(math.atan2(rel[1, 0], rel[0, 0]))]
        np.testing.assert_allclose(m, truth, atol=1e-9)
        expected = [min(max(np.digitize(v, e) - 1, 0), 4) for v, e in zip(truth, edges)]
        assert label.tolist() == expected
        # and the pixels agree: frame i seen from the motion's pose relative to it is frame j
        warped = render_view(frames[i], m, SMALL.side)
        wrong = render_view(frames[i], np.array([m[0] + 3.0, m[1] - 3.0, m[2] + 4.0]), SMALL.side)
        error = np.abs(warped[centre, centre].astype(float) - frames[j][centre, centre]).mean()
        error_wrong = np.abs(wrong[centre, centre].astype(float) - frames[j][centre, centre]).mean()
        assert error < 6.0 and error < error_wrong / 2, (i, j, error, error_wrong)


def test_pose_files_round_trip(tmp_path):
    frames, poses = make_sequence(_rng(1, 7, 0), SMALL)
    write_sequence(tmp_path / "a", frames, poses)
    write_sequence(tmp_path / "b", frames[:3], poses[:3] * 2)
    first, second = list_sequences(tmp_path)
    assert [f.name for f in first.frames] == [f"frame_{k:04d}.png" for k in range(SMALL.frames)]
    np.testing.assert_array_equal(first.poses, poses)  # exact: written as repr
    np.testing.assert_array_equal(second.poses, poses[:3] * 2)
    for k, file in enumerate(first.frames):
        assert torch.equal(decode_frame(file, SMALL.side), torch.from_numpy(frames[k]).permute(2, 0, 1))


@pytest.mark.parametrize("text, message", [
    ("frame,tx,ty\nf0.png,0,0\n", "missing column\\(s\\) rz"),
    ("frame,tx,ty,rz\nf0.png,0,0,0\nf1.png,1,zero,0\n", "row 3: tx, ty and rz must be finite numbers"),
    ("frame,tx,ty,rz\nf0.png,0,0,0\nf1.png,1,inf,0\n", "row 3: tx, ty and rz must be finite"),
    ("frame,tx,ty,rz\nf0.png,0,0,0\nf0.png,1,0,0\n", "frame 'f0.png' is listed twice"),
    ("frame,tx,ty,rz\nf0.png,0,0,0\n", "1 frame\\(s\\): a sequence needs at least 2"),
])
def test_bad_pose_files_are_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "poses.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        read_poses(path)
    assert str(path) in str(info.value)


def test_missing_poses_and_frames_are_refused_naming_the_file(tmp_path):
    (tmp_path / "s").mkdir()
    with pytest.raises(DataError, match="no poses file") as info:
        list_sequences(tmp_path)
    assert str(tmp_path / "s" / "poses.csv") in str(info.value)
    (tmp_path / "s" / "poses.csv").write_text("frame,tx,ty,rz\nf0.png,0,0,0\nf1.png,1,0,0\n")
    with pytest.raises(DataError, match="frame 'f0.png' is listed but .* does not exist"):
        list_sequences(tmp_path)
    with pytest.raises(DataError, match="no sequence folder"):
        list_sequences(tmp_path / "nowhere")


def test_loss_by_hand():
    labels = torch.tensor([[0, 1, 2], [2, 2, 0]])
    uniform = torch.zeros(2, 3, 4)
    assert egomotion.egomotion_loss(uniform, labels).item() == pytest.approx(3 * math.log(4))
    confident = torch.full((2, 3, 4), -50.0).scatter(2, labels[..., None], 50.0)
    assert egomotion.egomotion_loss(confident, labels).item() == pytest.approx(0.0, abs=1e-6)
    # one dimension wrong by a margin of 1 logit in a 2-way choice: log(1 + e) for it alone
    two = torch.zeros(1, 3, 2)
    two[0, :, 0] = torch.tensor([1.0, 0.0, 0.0])
    expected = math.log(1 + math.e) + 2 * math.log(2)
    assert egomotion.egomotion_loss(two, torch.tensor([[1, 0, 0]])).item() == pytest.approx(expected)


def test_ensure_adds_the_same_sequences_to_an_older_world(tiny_world, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / ".complete").write_bytes(b"")
    info = json.loads((tiny_world / "world.json").read_text())
    info.pop("egomotion")
    (old / "world.json").write_text(json.dumps(info))
    assert ensure_egomotion(old) is True
    assert ensure_egomotion(old) is False  # it has them now
    assert json.loads((old / "world.json").read_text())["egomotion"]["sequences"] == EGO_SIZES["tiny"].sequences
    ours = sorted(p.relative_to(old / "egomotion") for p in (old / "egomotion").rglob("*"))
    theirs = sorted(p.relative_to(tiny_world / "egomotion") for p in (tiny_world / "egomotion").rglob("*"))
    assert ours == theirs and len(ours) == 1 + EGO_SIZES["tiny"].sequences * (EGO_SIZES["tiny"].frames + 2)
    for rel in ours:
        if (old / "egomotion" / rel).is_file():
            assert (old / "egomotion" / rel).read_bytes() == (tiny_world / "egomotion" / rel).read_bytes()
    assert ensure_egomotion(tmp_path) is False  # not a world


def _ctx(world, cache, config, state_dir=None):
    return RunContext(torch.device("cpu"), 0, world, cache, "alexnet-small", config=config,
                      state_dir=state_dir, progress=None, log=lambda m: None)


FAST = {"epochs": 1, "batch_size": 16, "held_out": 0.25, "max_gap": 1}


def test_tiny_pretraining_gives_a_loadable_representation(tiny_world, tmp_path):
    rep = egomotion.pretrain(_ctx(tiny_world, tmp_path, FAST))
    assert rep.learned_stages == CONV_STAGES
    pretext = rep.meta["pretext"]
    assert pretext["metric"] == "motion-bin-accuracy" and pretext["bins"] == 7
    assert set(pretext["per_dimension"]) == {"tx", "ty", "rz"}
    assert pretext["value"] == pytest.approx(np.mean(list(pretext["per_dimension"].values())))
    assert 1 / 7 <= pretext["chance"] < 1 and 0 <= pretext["value_at_init"] <= 1
    assert pretext["held_out_pairs"] == 3 * 2 * 7  # 3 held-out sequences of 8 frames: 7 neighbours, both ways
    assert rep.meta["frame_pairs"] == 9 * 2 * 7
    loaded = Representation.load(rep.save(tmp_path / "rep"))
    assert loaded.meta["pretext"] == pretext
    for key, value in rep.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value)


def test_killed_pretraining_resumes_identically(tiny_world, tmp_path, monkeypatch):
    config = {**FAST, "epochs": 2}
    reference = egomotion.pretrain(_ctx(tiny_world, tmp_path, config))
    real_save = EpochCheckpoint.save

    def killed(self, state):
        real_save(self, state)
        raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(EpochCheckpoint, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        egomotion.pretrain(_ctx(tiny_world, tmp_path, config, tmp_path / "state"))
    monkeypatch.setattr(EpochCheckpoint, "save", real_save)
    resumed = egomotion.pretrain(_ctx(tiny_world, tmp_path, config, tmp_path / "state"))
    for key, value in reference.network.state_dict().items():
        assert torch.equal(resumed.network.state_dict()[key], value), key
    assert resumed.meta["pretext"] == reference.meta["pretext"]


def test_settings_and_data_errors(tiny_world, tmp_path):
    with pytest.raises(ValueError, match="unknown settings \\['bin'\\]"):
        egomotion.pretrain(_ctx(tiny_world, tmp_path, {"bin": 3}))
    with pytest.raises(ValueError, match="bins must be at least 2"):
        egomotion.pretrain(_ctx(tiny_world, tmp_path, {"bins": 1}))
    with pytest.raises(DataError, match="no sequence folder"):
        egomotion.pretrain(_ctx(tmp_path, tmp_path, {}))
    one = tmp_path / "one"
    shutil.copytree(tiny_world / "egomotion" / "seq_000000", one / "seq_000000")
    with pytest.raises(DataError, match="1 sequence\\(s\\): at least 2"):
        egomotion.pretrain(_ctx(tiny_world, tmp_path, {"sequence_dir": str(one)}))


def test_method_is_registered_through_its_entry_point():
    registry = Registry()
    assert registry.sources["egomotion"].startswith("entry point benchharness_plugins.egomotion")
    method = registry.methods()["egomotion"]
    assert method.group == "self-sup" and method.needs == ("video",)


def test_runs_on_the_tiny_world(tiny_world, tmp_path, one_thread):
    suite = tmp_path / "ego.toml"
    suite.write_text("""
name = "ego"
backbone = "alexnet-small"
seeds = 1
[methods]
use = ["egomotion"]
[methods.egomotion]
epochs = 1
batch_size = 16
max_gap = 1
[tasks]
use = ["voc07-cls"]
[tasks.voc07-cls]
protocols = ["fc8"]
epochs = 1
batch_size = 16
test_crops = 1
train_crops = 1
""")
    results = tmp_path / "results"
    out = CliRunner().invoke(main, ["run", "--suite", str(suite), "--data-root", str(tiny_world),
                                    "--results", str(results), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    (path,) = (results / "runs").rglob("*.json")
    result = json.loads(path.read_text())
    assert result["status"] == "ok" and result["method"] == "egomotion" and result["group"] == "self-sup"
    assert 0 <= result["value"] <= 100 and result["pretext"]["metric"] == "motion-bin-accuracy"
    assert "value_at_init" in result["pretext"]


def test_fusion_benchmark_scores_late_and_early_fusion_on_the_same_pairs(tiny_world, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "egomotion_fusion.py"
    subprocess.run([sys.executable, str(script), str(tiny_world), "--steps", "2", "--bins", "3",
                    "--out", str(tmp_path)], check=True, capture_output=True)
    figures = json.loads((tmp_path / "egomotion_fusion.json").read_text())
    assert figures["steps"] == 2 and figures["bins"] == 3 and figures["held_out_pairs"] > 0
    late, early = figures["late"], figures["early"]
    assert set(late["per_dimension"]) == set(early["per_dimension"]) == {"tx", "ty", "rz"}
    assert late["chance_per_dimension"] == early["chance_per_dimension"]  # the same held-out pairs


def test_early_fusion_twin_takes_both_frames_as_one_six_channel_image():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from egomotion_fusion import EarlyFusionNet
    net = EarlyFusionNet("alexnet-small", bins=5, width=16)
    assert net.trunk.conv1.conv.in_channels == 6
    a, b = torch.zeros(2, 3, 64, 64), torch.ones(2, 3, 64, 64)
    assert net(a, b).shape == (2, 3, 5)
    # the first frame fills channels 0-2: swapping the frames changes the input the trunk sees
    assert not torch.equal(net(a, b), net(b, a))
