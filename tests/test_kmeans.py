"""k-means initialisation (Krahenbuhl et al. 2016): whitening, k-means filters on hand-made
clusters, patches against convolution, the layer-by-layer initialisation, resuming, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.nn import functional as F

from benchharness.backbones import CONV_STAGES, build
from benchharness.cli import main
from benchharness.interfaces import RunContext
from benchharness.patch_kmeans import best_filter_cosine, fit_whitening, kmeans_filters, layer_patches
from benchharness.plugins import Registry
from benchharness.representation import Representation
from benchharness.rescale import channel_statistics, initialise_layers
from benchharness_plugins import kmeans


def _rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q


def _clustered_patches(n_per: int = 400, jitter: float = 0.02):
    """Patches ``mean + R diag(sigma) u`` with ``u`` one of the 6 points +-e_i (plus jitter).

    Cov(u) = I / 3, so the ZCA whitening is ``R diag(sqrt(3) / sigma) R^T`` and a whitened
    patch is ``sqrt(3) R u``: at unit length the 6 clusters sit at +-R e_i whatever sigma is."""
    rng = np.random.default_rng(0)
    r, sigma, mean = _rotation(3, 1), np.array([10.0, 1.0, 0.1]), np.array([5.0, -2.0, 7.0])
    centres = np.concatenate([np.eye(3), -np.eye(3)])
    labels = np.repeat(np.arange(6), n_per)
    u = centres[labels] + jitter * rng.standard_normal((len(labels), 3))
    x = mean + (u * sigma) @ r.T
    return x, labels, centres @ r.T  # the expected unit centroids R (+-e_i)


def test_whitened_patches_have_unit_covariance():
    x = np.random.default_rng(2).standard_normal((5000, 4)) @ np.diag([30.0, 3.0, 1.0, 0.2]) @ _rotation(4, 3)
    w = fit_whitening(x, 4, eps=0.0)
    white = w.apply(x)
    np.testing.assert_allclose(white.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(np.cov(white.T, bias=True), np.eye(4), atol=1e-8)
    np.testing.assert_allclose(w.matrix, w.matrix.T)  # ZCA: symmetric
    # the top-2 whitening keeps the two largest variances' directions only
    top = fit_whitening(x, 2, eps=0.0)
    assert np.linalg.matrix_rank(top.matrix) == 2
    np.testing.assert_allclose(np.cov(top.apply(x).T, bias=True) @ top.matrix, top.matrix, atol=1e-8)


def test_kmeans_filters_are_the_centroids_of_the_whitened_patches():
    x, labels, expected = _clustered_patches()
    found = kmeans_filters(x, 6, seed=0, eps=0.0)
    # each centroid of the unit-length whitened patches is one of the hand-made +-R e_i
    unit = found.centroids / np.linalg.norm(found.centroids, axis=1, keepdims=True)
    match = unit @ expected.T
    assert sorted(match.argmax(1)) == list(range(6)) and match.max(1).min() > 0.999
    # un-whitened: a filter's response to a raw patch is its centroid . the whitened patch + const
    white = found.whitening.apply(x)
    response = (x - found.whitening.mean) @ found.filters.T
    scale = response.std(0)
    np.testing.assert_allclose(scale, 1.0, rtol=1e-9)  # each filter's response normalised
    np.testing.assert_allclose(response, (white @ found.centroids.T) / (white @ found.centroids.T).std(0),
                               rtol=1e-6, atol=1e-9)
    # so the filter that answers most to a patch is its own cluster's
    owner = match.argmax(1)  # centroid -> hand-made cluster
    assert (owner[response.argmax(1)] == labels).mean() == 1.0
    # best-filter cosine: the clusters' own directions explain every patch, random ones do not
    assert best_filter_cosine(x, found.filters, found.whitening) > 0.99
    random = np.random.default_rng(5).standard_normal((6, 3))
    assert best_filter_cosine(x, random, found.whitening) < 0.95


def test_kmeans_needs_as_many_patches_as_filters():
    with pytest.raises(ValueError, match="needs at least 8 patches, got 5"):
        kmeans_filters(np.ones((5, 3)), 8)


def test_layer_patches_are_what_the_convolution_sees():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    x = torch.randn(2, 2, 7, 7)
    patches = layer_patches(x, conv, per_image=1000)  # more than the 16 positions: all of them
    assert patches.shape == (2 * 16, 2 * 9)
    direct = F.conv2d(x, conv.weight, stride=2, padding=1)  # [2, 3, 4, 4], no bias
    via_patches = patches @ conv.weight.reshape(3, -1).T
    for image in range(2):
        mine = via_patches[image * 16:(image + 1) * 16]
        theirs = direct[image].reshape(3, -1).T
        # each image's windows in a random order: compare as sorted rows
        key = lambda rows: rows[torch.argsort(rows[:, 0])]
        torch.testing.assert_close(key(mine), key(theirs), rtol=1e-5, atol=1e-5)
    assert layer_patches(x, conv, per_image=5).shape == (10, 18)
    fc = nn.Linear(98, 4)
    assert torch.equal(layer_patches(x, fc, per_image=5), x.reshape(2, -1))


def test_kmeans_type_initialises_a_layer_with_unit_std_and_the_bias_as_mean():
    torch.manual_seed(0)
    trunk = build("alexnet-small")
    images = torch.randn(12, 3, 64, 64)
    stats = initialise_layers(trunk, images, ["conv1", "conv2"], types={"conv1": "kmeans", "conv2": "kmeans"},
                              generator=torch.Generator().manual_seed(0), per_image=32)
    assert stats["conv1"]["type"] == "kmeans" and stats["conv1"]["patches"] == 12 * 32
    assert stats["conv2"]["patch_dim"] == 32 * 25
    for stage in ("conv1", "conv2"):
        mean, std = channel_statistics(trunk, images, trunk.stage(stage).conv)
        torch.testing.assert_close(std, torch.ones_like(std), rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(mean, torch.full_like(mean, 0.1), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="layer conv3: unknown initialisation type 'pca'"):
        initialise_layers(trunk, images, ["conv3"], types={"conv3": "pca"})


def _ctx(world, tmp_path, state=None, progress=None, log=print, **config):
    cfg = {"images": 16, "patches_per_image": 32, **config}
    return RunContext(torch.device("cpu"), 0, world, tmp_path / "cache", "alexnet-small", config=cfg,
                      state_dir=state, progress=progress, log=log)


def test_initialisation_gives_a_loadable_representation_that_beats_its_untrained_pretext(tiny_world, tmp_path):
    rep = kmeans.pretrain(_ctx(tiny_world, tmp_path))
    assert rep.learned_stages == CONV_STAGES and rep.meta["gradient_steps"] == 0
    assert [rep.meta["init"][s]["type"] for s in CONV_STAGES] == ["kmeans"] * 5
    assert rep.meta["init"]["fc6"]["type"] == "elwise" and rep.meta["calibration"]["rounds"] >= 1
    pretext = rep.meta["pretext"]
    assert pretext["metric"] == "conv1-best-filter-cosine"
    # 512 patches make a weak k-means (0.49 against 0.44 untrained, 0.36 chance, on the tiny
    # world); the defaults' 20480 give 0.57 against 0.46 and 0.35 on the small world
    assert pretext["value"] > pretext["value_at_init"] + 0.03 and pretext["value"] > pretext["chance"] + 0.1
    loaded = Representation.load(rep.save(tmp_path / "rep"))
    assert loaded.learned_stages == CONV_STAGES
    for key, value in rep.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value), key


def test_settings_are_checked(tiny_world, tmp_path):
    with pytest.raises(ValueError, match=r"kmeans: unknown settings \['epochs'\]"):
        kmeans.pretrain(_ctx(tiny_world, tmp_path, epochs=3))
    with pytest.raises(ValueError, match="kmeans: fc_type must be one of"):
        kmeans.pretrain(_ctx(tiny_world, tmp_path, fc_type="pca"))


def test_killed_initialisation_resumes_at_the_next_layer(tiny_world, tmp_path):
    from test_context import killed_after
    fast = {"images": 8, "patches_per_image": 16, "calibrate": False}  # calibration comes after the loop
    full = kmeans.pretrain(_ctx(tiny_world, tmp_path, tmp_path / "a", **fast))
    with pytest.raises(KeyboardInterrupt):  # conv1, conv2 done
        kmeans.pretrain(_ctx(tiny_world, tmp_path, tmp_path / "b", killed_after(2), **fast))
    logs = []
    resumed = kmeans.pretrain(_ctx(tiny_world, tmp_path, tmp_path / "b", log=logs.append, **fast))
    assert "resuming kmeans pretraining at layer 3 (conv3)" in logs
    for key, value in full.network.state_dict().items():
        assert torch.allclose(value, resumed.network.state_dict()[key], atol=1e-5), key
    assert resumed.meta["init"].keys() == full.meta["init"].keys()


def test_method_is_registered_through_its_entry_point():
    registry = Registry()
    assert registry.sources["kmeans"].startswith("entry point benchharness_plugins.kmeans")
    method = registry.methods()["kmeans"]
    assert method.group == "unsup" and method.needs == ("images",)


SUITE = """
name = "kmeans-e2e"
backbone = "alexnet-small"
seeds = 1
[methods]
use = ["kmeans"]
[methods.kmeans]
images = 16
patches_per_image = 32
[tasks]
use = ["voc07-cls"]
[tasks.voc07-cls]
protocols = ["fc8"]
epochs = 1
batch_size = 16
test_crops = 1
"""


@pytest.mark.slow
def test_end_to_end_on_the_tiny_world(tiny_world, tmp_path):
    suite = tmp_path / "kmeans.toml"
    suite.write_text(SUITE)
    out = CliRunner().invoke(main, ["run", "--suite", str(suite), "--data-root", str(tiny_world),
                                    "--results", str(tmp_path / "results"), "--device", "cpu"])
    assert out.exit_code == 0, out.output
    [path] = (tmp_path / "results" / "runs").rglob("*.json")
    result = json.loads(path.read_text())
    assert result["status"] == "ok" and result["method"] == "kmeans" and 0 < result["value"] <= 100
    assert result["pretext"]["value"] > result["pretext"]["value_at_init"]


def test_the_suites_declare_kmeans_with_known_settings():
    from benchharness.suite import load_suite
    assert "kmeans" in load_suite("table53").methods
    assert "kmeans" not in load_suite("smoke").methods  # make demo's time: --method selects it
    for name in ("table53", "voc-transfer"):
        settings = load_suite(name).resolve_method("kmeans").settings
        assert settings and set(settings) <= set(kmeans.DEFAULTS), name
