"""Sound (Owens et al. 2016): texture statistics, k-means and binary codes, a tiny pretraining."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchharness.backbones import STAGES
from benchharness.data.loading.video import write_clip
from benchharness.data.synthetic.sound import make_sound
from benchharness.interfaces import DataError, RunContext
from benchharness.plugins import Registry
from benchharness.representation import Representation
from benchharness_plugins import sound
from benchharness_plugins.sound.codes import BinaryCodes, KMeans
from benchharness_plugins.sound.texture import TextureStatistics, band_edges, standardise

SR = 16_000


def test_band_edges_are_erb_spaced_and_bands_respond_where_they_should():
    edges = band_edges(16, 80, 7000)
    assert edges[0] == pytest.approx(80) and edges[-1] == pytest.approx(7000)
    widths = np.diff(edges)
    assert (widths > 0).all() and (np.diff(widths) > 0).all()  # wider towards high frequencies
    stats = TextureStatistics(SR)
    t = np.arange(SR) / SR
    for freq in (300.0, 1000.0, 4000.0):
        env = stats.envelopes(np.sin(2 * np.pi * freq * t)[None])[0]
        loudest = env.mean(1).argmax()
        assert stats.edges[loudest] <= freq <= stats.edges[loudest + 1], freq


def test_modulation_power_peaks_at_the_modulation_rate():
    stats = TextureStatistics(SR)
    names = stats.statistic_names()
    t = np.arange(SR) / SR
    noise = np.random.default_rng(0).standard_normal(SR)
    for rate, band in ((6.0, "4-8Hz"), (24.0, "16-32Hz")):
        features = stats((noise * (1 + 0.9 * np.sin(2 * np.pi * rate * t)))[None])[0]
        assert len(features) == len(names)
        per_band = {}
        for name, value in zip(names, features):
            if name.startswith("mod[") and "1" in name:
                per_band.setdefault(name.split(",")[1].rstrip("]"), []).append(value)
        means = {k: np.mean(v) for k, v in per_band.items()}
        assert max(means, key=means.get) == band, means


def test_texture_statistics_separate_sound_classes():
    """Two clips of one sound class are closer in texture statistics than clips of two classes."""
    classes = ["bell", "engine", "chirp", "speech", "rustle", "moo", "clink", "roar"]
    audio = np.stack([make_sound(np.random.default_rng(1000 * c + i), name, 1.0)
                      for c, name in enumerate(classes) for i in range(3)])
    labels = np.repeat(np.arange(len(classes)), 3)
    z, _, _ = standardise(TextureStatistics(SR)(audio))
    distances = np.linalg.norm(z[:, None] - z[None], axis=-1)
    same = labels[:, None] == labels[None]
    off_diagonal = ~np.eye(len(z), dtype=bool)
    within = distances[same & off_diagonal]
    between = distances[~same]
    assert within.mean() < 0.75 * between.mean()
    for c in range(len(classes)):  # per class: its clips are closer on average to each other than
        rows = labels == c         # to the clips of any other class
        own = distances[np.ix_(rows, rows)][off_diagonal[:3, :3]].mean()
        for other in set(range(len(classes))) - {c}:
            assert own < distances[np.ix_(rows, labels == other)].mean(), (classes[c], classes[other])
    nearest = np.where(off_diagonal, distances, np.inf).argmin(1)
    assert np.mean(labels[nearest] == labels) >= 0.8


def test_kmeans_finds_separated_blobs_and_is_deterministic():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (5, 8))
    x = np.concatenate([c + rng.normal(0, 0.5, (40, 8)) for c in centres])
    truth = np.repeat(np.arange(5), 40)
    km = KMeans(5, seed=1).fit(x)
    labels = km.predict(x)
    for c in range(5):  # every blob is one cluster and every cluster one blob
        assert len(set(labels[truth == c])) == 1
    assert len(set(labels)) == 5
    assert np.array_equal(km.predict(km.centres), np.arange(5))
    again = KMeans(5, seed=1).fit(x)
    assert np.array_equal(again.centres, km.centres) and again.inertia == km.inertia
    with pytest.raises(ValueError, match="needs at least 6 points"):
        KMeans(6).fit(x[:5])


def test_binary_codes_threshold_principal_components_at_their_medians():
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 1, (400, 3)) * np.array([10.0, 5.0, 1.0])
    basis = np.linalg.qr(rng.normal(size=(12, 12)))[0][:3]  # three orthonormal directions
    x = scores @ basis + rng.normal(0, 0.01, (400, 12)) + 7.0
    codes = BinaryCodes(2).fit(x)
    bits = codes.encode(x)
    assert bits.shape == (400, 2) and bits.dtype == np.uint8
    assert np.allclose(bits.mean(0), 0.5, atol=0.01)  # median thresholds: balanced bits
    for k in range(2):  # each bit is the sign of one principal score (up to its orientation)
        agree = np.mean(bits[:, k] == (scores[:, k] > np.median(scores[:, k])))
        assert agree > 0.97 or agree < 0.03
    assert np.array_equal(BinaryCodes(2).fit(x).encode(x), bits)
    with pytest.raises(ValueError, match="13 bits"):
        BinaryCodes(13).fit(x)


def _ctx(world, tmp_path, config):
    return RunContext(torch.device("cpu"), 0, world, tmp_path / "cache", "alexnet-small", config=config,
                      log=lambda m: None)


@pytest.mark.parametrize("target, metric", [("clusters", "cluster-accuracy"), ("binary", "bit-accuracy")])
def test_tiny_pretraining_gives_a_loadable_representation(tiny_world, tmp_path, target, metric):
    config = {"epochs": 2, "batch_size": 8, "clusters": 4, "bits": 4, "target": target, "held_out": 0.2}
    rep = sound.pretrain(_ctx(tiny_world, tmp_path, config))
    assert rep.learned_stages == STAGES
    pretext = rep.meta["pretext"]
    assert pretext["metric"] == metric and 0.0 <= pretext["value"] <= 1.0
    assert pretext["held_out_clips"] == 4 and pretext["held_out_frames"] == 16
    assert 0.25 <= pretext["chance"] <= 1.0
    if target == "binary":
        assert len(pretext["per_bit"]) == 4 and np.mean(pretext["per_bit"]) == pytest.approx(pretext["value"])
    loaded = Representation.load(rep.save(tmp_path / "rep"))
    assert loaded.meta["pretext"] == pretext
    for key, value in rep.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value)


def test_held_out_targets_come_from_the_training_fit():
    audio = np.stack([make_sound(np.random.default_rng(i), name, 1.0)
                      for i, name in enumerate(["bell", "engine", "chirp", "moo"] * 4)])
    cfg = {**sound.DEFAULTS, "clusters": 4}
    train_y, held_y, info = sound.sound_targets(audio[:12], audio[12:], cfg, SR, seed=0)
    assert train_y.dtype == torch.int64 and len(held_y) == 4
    # each held-out clip falls in the cluster of the training clips of its own sound
    for k in range(4):
        assert held_y[k] == train_y[k] == train_y[k + 4] == train_y[k + 8]
    assert info["clusters"] == 4 and info["statistics"] == 248
    codes = sound.sound_targets(audio[:12], audio[12:], {**cfg, "target": "binary", "bits": 3}, SR, 0)
    assert codes[0].shape == (12, 3) and set(codes[0].unique().tolist()) <= {0.0, 1.0}


def test_settings_errors_and_silent_videos(tiny_world, tmp_path):
    with pytest.raises(ValueError, match="unknown settings \\['cluster'\\]"):
        sound.pretrain(_ctx(tiny_world, tmp_path, {"cluster": 3}))
    with pytest.raises(ValueError, match="target must be one of"):
        sound.pretrain(_ctx(tiny_world, tmp_path, {"target": "spectrogram"}))
    with pytest.raises(ValueError, match="cannot make 30 clusters"):
        sound.pretrain(_ctx(tiny_world, tmp_path, {"epochs": 1}))  # 18 training clips
    folder = tmp_path / "silent"
    folder.mkdir()
    frames = np.zeros((16, 64, 64, 3), np.uint8)
    for i in range(3):
        write_clip(folder / f"quiet{i}.mkv", frames, None, 16, 16000)
    with pytest.raises(DataError, match="quiet0.mkv: has no audio stream"):
        sound.pretrain(_ctx(tmp_path, tmp_path, {"video_dir": str(folder)}))


def test_method_is_registered_through_its_entry_point():
    registry = Registry()
    assert registry.sources["sound"].startswith("entry point benchharness_plugins.sound")
    method = registry.methods()["sound"]
    assert method.group == "self-sup" and method.needs == ("video", "audio")
