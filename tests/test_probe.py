"""voc07-cls probes: the SVM solvers, the cost picked by cross-validation, pooled stage features,
and a probe end to end on the tiny world (one forward pass serves every stage)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import average_precision_score

from benchharness.backbones import build
from benchharness.cli import main
from benchharness.evaluators.voc_ap import evaluate_classification
from benchharness.interfaces import RunContext
from benchharness.representation import Representation
from benchharness.tasks import linear_svm, probe_features
from benchharness.tasks.classification import transfer
from benchharness.tasks.probe import ProbeConfig
from benchharness.tasks.probe_classifier import fit_probe

COSTS = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]


def _weak_direction_case(rng, n=120):
    """Positives differ from negatives by a small, noise-free shift along v (AP 1 along it); the
    class means also differ along u, a big noisy direction: a small cost's solution leans on the
    mean difference (u), only a large cost finds v."""
    y = np.where(np.arange(n) % 3 == 0, 1, -1)
    u = rng.normal(size=n) * 3 + (y > 0) * 1.0
    v = np.where(y > 0, 0.03, 0.0)
    return np.stack([u, v, rng.normal(size=n) * 3], 1), y


def _noisy_labels_case(rng, n=90, d=100):
    """A weak signal in 5 of 100 Gaussian dimensions, a quarter of the labels flipped: with more
    dimensions than images per fold, a large cost fits the noise; a small one keeps the class-mean
    direction, which generalises."""
    y = np.where(np.arange(n) % 2 == 0, 1, -1)
    x = rng.normal(size=(n, d))
    x[:, :5] += 1.5 * y[:, None] / np.sqrt(5)
    return x, np.where(rng.random(n) < 0.25, -y, y)


@pytest.fixture(scope="module")
def cases():
    rng = np.random.default_rng(0)
    return _weak_direction_case(rng), _noisy_labels_case(rng)


@pytest.mark.parametrize("solver", ["sklearn", "torch"])
def test_cross_validation_picks_a_large_cost_where_only_it_separates(cases, solver):
    x, y = cases[0]
    fit = fit_probe(x, y[:, None], x, COSTS, folds=3, seed=0, solver=solver, positive_weight=1.0,
                    max_iter=100_000)
    ap = fit.cv_ap[0]
    assert ap[0] < 0.5 and ap[-1] == pytest.approx(1.0)  # the premise: small costs rank badly
    assert fit.chosen[0] >= 10.0
    assert ap[COSTS.index(fit.chosen[0])] == pytest.approx(np.nanmax(ap))
    assert fit.folds_scored[0] == 3


@pytest.mark.parametrize("solver", ["sklearn", "torch"])
def test_cross_validation_picks_a_small_cost_on_noisy_labels(cases, solver):
    x, y = cases[1]
    # the premise: scored on its own training images, every cost from 0.1 up looks perfect, so a
    # selection that scored the training part instead of the held-out one would pick 0.1 or more
    both = np.repeat(np.where(y > 0, 1.0, -1.0)[:, None], len(COSTS), 1)
    seen = linear_svm.fit(x, both, np.ones_like(both), np.array(COSTS), "torch").decision(x)
    train_ap = [average_precision_score(y > 0, seen[:, j]) for j in range(len(COSTS))]
    assert train_ap[0] < 1.0 and all(a == 1.0 for a in train_ap[2:])
    fit = fit_probe(x, y[:, None], x, COSTS, folds=3, seed=0, solver=solver, positive_weight=1.0,
                    max_iter=100_000)
    assert fit.chosen[0] <= 0.01
    assert fit.cv_ap[0, 0] > fit.cv_ap[0, -1] + 0.05


def test_the_two_solvers_find_the_same_svm():
    rng = np.random.default_rng(1)
    for n, d in ((60, 200), (200, 20)):  # the kernel and the primal systems
        assert linear_svm.uses_primal(n, d) == (d < n)
        x = np.abs(rng.normal(size=(n, d)))
        y = np.where(x[:, :3].sum(1, keepdims=True) + rng.normal(size=(n, 4)) > 2.5, 1.0, -1.0)
        weight = np.where(y > 0, 2.0, 1.0)
        weight[:5, 1] = 0.0  # left out of problem 1
        y[:, 3] = -1.0  # one label only
        costs = np.array([0.01, 1.0, 30.0, 1.0])
        a = linear_svm.fit(x, y, weight, costs, "sklearn", tol=1e-8, max_iter=1_000_000)
        b = linear_svm.fit(x, y, weight, costs, "torch")
        assert b.converged.all()
        np.testing.assert_allclose(b.w, a.w, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b.b, a.b, rtol=1e-4, atol=1e-5)
        assert b.b[3] == -1.0 and not b.w[3].any()
    # the objective liblinear minimises, checked by hand at the torch solution: its gradient is 0
    j = 1
    keep = weight[:, j] > 0
    xt = np.c_[x, np.ones(n)][keep]
    wt = np.r_[b.w[j], b.b[j]]
    margin = np.maximum(0, 1 - y[keep, j] * (xt @ wt))
    grad = wt - 2 * costs[j] * xt.T @ (weight[keep, j] * margin * y[keep, j])
    assert np.abs(grad).max() < 1e-8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_torch_solver_on_cuda_finds_liblinear_s_svm():
    rng = np.random.default_rng(2)
    x = np.abs(rng.normal(size=(80, 300)))
    y = np.where(x[:, :3].sum(1, keepdims=True) + rng.normal(size=(80, 3)) > 2.5, 1.0, -1.0)
    costs = np.array([0.1, 1.0, 10.0])
    a = linear_svm.fit(x, y, np.ones_like(y), costs, "sklearn", tol=1e-8, max_iter=1_000_000)
    b = linear_svm.fit(x, y, np.ones_like(y), costs, "torch", device=torch.device("cuda"))
    np.testing.assert_allclose(b.w, a.w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.b, a.b, rtol=1e-4, atol=1e-5)


def test_grid_sides_give_the_literature_s_9k_features_on_caffenet():
    # Goyal et al.'s CaffeNet grids: conv1 96 x 10 x 10, conv2 256 x 6 x 6, conv3/4 384 x 5 x 5
    assert [probe_features.grid_side(c, s, 9216) for c, s in
            ((96, 55), (256, 27), (384, 13), (384, 13), (256, 6))] == [10, 6, 5, 5, 6]
    assert probe_features.grid_side(96, 7, 9216) == 7  # never more than the map


def test_stage_features_are_the_trunk_s_pooled_activations():
    torch.manual_seed(0)
    trunk = build("caffenet").eval()
    x = torch.randn(2, 3, 227, 227)
    feats = probe_features.stage_features(trunk, x, ["conv1", "conv2", "conv3", "conv5", "fc7"], 9216)
    assert {s: f.shape[1] for s, f in feats.items()} == {
        "conv1": 9600, "conv2": 9216, "conv3": 9600, "conv5": 9216, "fc7": 4096}
    with torch.no_grad():
        # computed independently: conv2's rectified output (before LRN and pool), 27 x 27 -> 6 x 6
        relu2 = torch.relu(trunk.conv2.conv(trunk.forward_to(x, "conv1")))
        assert relu2.shape[-1] == 27
        blocks = torch.nn.functional.adaptive_avg_pool2d(relu2, 6)
        torch.testing.assert_close(feats["conv2"], blocks.flatten(1))
        torch.testing.assert_close(feats["conv5"], trunk.forward_to(x, "conv5").flatten(1))  # pool5
        torch.testing.assert_close(feats["fc7"], trunk.forward_to(x, "fc7"))
    # Goyal et al.'s fixed window for conv1 (19 x 19, stride 4: 55 -> 10)
    fixed = probe_features.stage_features(trunk, x, ["conv1"], 9216, windows={"conv1": (19, 4)})
    assert fixed["conv1"].shape == (2, 9600)
    with pytest.raises(ValueError, match="larger than the map"):
        probe_features.stage_features(trunk, x, ["conv3"], 9216, windows={"conv3": (14, 1)})


def test_pool_map_averages_blocks_by_hand():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # 2 x 2 grid: means of the four 2 x 2 blocks
    assert probe_features.pool_map(x, dims=4).tolist() == [[2.5, 4.5, 10.5, 12.5]]
    assert probe_features.pool_map(x, dims=4, pool="max").tolist() == [[5.0, 7.0, 13.0, 15.0]]


def test_the_two_views_of_an_image():
    images = torch.randint(0, 256, (2, 3, 80, 80), dtype=torch.uint8)
    as_float = images.float() / 255
    torch.testing.assert_close(probe_features.view(images, 64, "center"), as_float[:, :, 8:72, 8:72])
    torch.testing.assert_close(probe_features.view(images, 80, "resize"), as_float)
    assert probe_features.view(images, 40, "resize").shape == (2, 3, 40, 40)


def test_probe_settings_are_checked():
    assert ProbeConfig.from_mapping({"windows": {"conv1": [19, 4]}}).windows == {"conv1": (19, 4)}
    auto, cpu = ProbeConfig(), torch.device("cpu")
    assert [auto.solver_on(cpu, 1000, 256), auto.solver_on(cpu, 1000, 9248),
            auto.solver_on(torch.device("cuda"), 1000, 256)] == ["sklearn", "torch", "torch"]
    assert ProbeConfig(solver="sklearn").solver_on(torch.device("cuda"), 10, 10) == "sklearn"
    for raw, match in (({"cost": [1.0]}, "unknown voc07-cls probe settings.*'cost'"),
                       ({"costs": [0.0, 1.0]}, "positive"),
                       ({"folds": 1}, "at least 2"),
                       ({"windows": {"fc6": [2, 1]}}, "'fc6' is not a conv stage"),
                       ({"windows": {"conv1": [19]}}, "conv1 needs \\[kernel, stride\\]"),
                       ({"solver": "liblinear"}, "solver must be one of")):
        with pytest.raises(ValueError, match=match):
            ProbeConfig.from_mapping(raw)


def test_probes_end_to_end_share_one_forward_pass(tiny_world, tmp_path, monkeypatch):
    torch.manual_seed(0)
    rep = Representation(build("alexnet-small"), "alexnet-small", meta={"config_hash": "probe-rep"})
    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path / "cache", "alexnet-small",
                     config={"probe": {"solver": "torch", "costs": [0.01, 1.0, 100.0]}})
    passes = []
    real = probe_features.stage_features

    def counting(network, x, stages, *args, **kwargs):
        passes.append((len(x), tuple(stages)))
        return real(network, x, stages, *args, **kwargs)

    monkeypatch.setattr(probe_features, "stage_features", counting)
    out = transfer(rep, "probe-conv3", ctx)
    n_images = len(out.ground_truth.image_ids) + out.info["train_images"]
    assert sum(n for n, _ in passes) == n_images  # each image once, every stage in that pass
    assert all(stages == ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7") for _, stages in passes)
    assert out.predictions.scores.shape == (len(out.ground_truth.image_ids), 20)
    info = out.info
    assert info["stage"] == "conv3" and info["read_at"] == "relu" and info["solver"] == "torch"
    assert info["feature_dims"] == 96 * 7 * 7  # alexnet-small's conv3 map is 7 x 7: not pooled
    assert set(info["probe"]["chosen_cost"].values()) <= {0.01, 1.0, 100.0}
    assert 0 <= evaluate_classification(out.predictions, out.ground_truth, out.metric).mean <= 1
    passes.clear()
    later = transfer(rep, "probe-fc7", ctx)  # read from the cache: no forward pass at all
    assert passes == [] and later.info["features_from_cache"] and later.info["feature_dims"] == 256


def test_probe_protocols_are_selectable_from_the_command_line(fast_suite, tiny_world, tmp_path):
    out = CliRunner().invoke(main, ["run", "--suite", str(fast_suite), "--data-root", str(tiny_world),
                                    "--results", str(tmp_path / "r"), "--protocol", "probe-conv5",
                                    "--protocol", "probe-fc7", "--seeds", "1", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "probe-conv5" in out.output and "probe-fc7" in out.output and "fc8" not in out.output
