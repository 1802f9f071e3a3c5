"""source-cls (Table 5.2's protocol) on the tiny world: frozen stages stay bit-identical, the
stages above are re-initialised as a random trunk, streaming equals memory, bad folders are named,
and a CLI run of conv1/conv5 and k-NN end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from benchharness.backbones import STAGES, build
from benchharness.cli import main
from benchharness.data.loading.labelled import LabelledImages
from benchharness.interfaces import DataError, RunContext
from benchharness.representation import Representation
from benchharness.tasks import source_cls


def _rep(seed: int = 5) -> Representation:
    torch.manual_seed(seed)
    return Representation(build("alexnet-small"), "alexnet-small", meta={"config_hash": f"test-{seed}"})


def _ctx(world: Path, tmp_path: Path, **config) -> RunContext:
    config = {"epochs": 1, "batch_size": 16, **config}
    return RunContext(device=torch.device("cpu"), seed=0, data_root=world, cache_dir=tmp_path / "cache",
                      backbone="alexnet-small", config=config)


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _weight(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return next(v for k, v in state.items() if k.endswith("weight"))


def test_conv3_freezes_conv1_to_conv3_and_reinitialises_the_rest(tiny_world, tmp_path, one_thread):
    rep = _rep()
    pretrained = {s: _state(rep.network.stage(s)) for s in STAGES}
    model = source_cls.frozen_classifier(rep, 20, "conv3", seed=0)
    at_init = {s: _state(model.trunk.stage(s)) for s in STAGES}
    for stage in STAGES[3:]:  # conv4 onward: new weights before any training
        assert not torch.equal(_weight(at_init[stage]), _weight(pretrained[stage])), stage
    assert all(not p.requires_grad for s in STAGES[:3] for p in model.trunk.stage(s).parameters())

    ctx = _ctx(tiny_world, tmp_path)
    cfg = source_cls.SourceClsConfig.from_mapping(ctx.config, "conv3")
    cfg.input_size, cfg.store_size = 64, 72
    data = LabelledImages(source_cls.source_folders(cfg, tiny_world)[0], cfg.store_size, "memory")
    _, iterations = source_cls.train(model, data, cfg, ctx)
    assert iterations == len(data) // 16
    for stage in STAGES[:3]:  # bit-identical to the representation's
        for key, value in model.trunk.stage(stage).state_dict().items():
            assert torch.equal(value, pretrained[stage][key]), (stage, key)
    for stage in STAGES[3:]:  # trained
        assert not torch.equal(_weight(_state(model.trunk.stage(stage))), _weight(at_init[stage])), stage
    assert all(p.requires_grad for p in rep.network.parameters())  # the representation's own trunk untouched


def test_reinitialised_stages_are_a_random_trunks_init():
    model = source_cls.frozen_classifier(_rep(), 20, "conv2", seed=7)
    fresh = build("alexnet-small")
    fresh.reset_parameters(STAGES[2:], generator=torch.Generator().manual_seed(7))
    for stage in STAGES[2:]:
        for key, value in fresh.stage(stage).state_dict().items():
            assert torch.equal(model.trunk.stage(stage).state_dict()[key], value), (stage, key)
    weights = model.trunk.conv4.conv.weight  # He init: N(0, 2 / fan_in), bias 0.1
    assert weights.std().item() == pytest.approx((2 / weights[0].numel()) ** 0.5, rel=0.05)
    assert torch.all(model.trunk.conv4.conv.bias == 0.1)


def test_streamed_source_set_gives_the_same_predictions(tiny_world, tmp_path, one_thread):
    scores = {}
    for mode in ("memory", "stream"):
        ctx = _ctx(tiny_world, tmp_path, data=mode, data_workers=0)
        out = source_cls.transfer(_rep(), "conv5", ctx)
        scores[mode] = out.predictions.scores
        assert out.info["data"] == mode
    np.testing.assert_array_equal(scores["memory"], scores["stream"])


def test_rescale_reaches_source_cls(tiny_world, tmp_path, one_thread):
    random_trunk = Representation(_rep().network, "alexnet-small", learned_stages=(),
                                  meta={"config_hash": "test-random"})
    plain = source_cls.transfer(random_trunk, "knn-conv1", _ctx(tiny_world, tmp_path, knn_k=3))
    out = source_cls.transfer(random_trunk, "knn-conv1", _ctx(tiny_world, tmp_path, knn_k=3, rescale=True))
    assert plain.info["rescale"] is None
    assert out.info["rescale"]["initialised"] == [*STAGES, "fc8"]  # magic_init of a random trunk
    assert not np.array_equal(out.predictions.scores, plain.predictions.scores)


def test_bad_folders_and_settings_are_named(tiny_world, tmp_path):
    with pytest.raises(DataError, match="nowhere.*set `train_dir`"):
        source_cls.transfer(_rep(), "conv5", _ctx(tiny_world, tmp_path, train_dir=str(tmp_path / "nowhere")))
    foreign = tmp_path / "val"
    shutil.copytree(tiny_world / "source" / "val" / "cat", foreign / "zebra")
    with pytest.raises(DataError, match=r"classes \['zebra'\] are not in the train folder"):
        source_cls.transfer(_rep(), "conv5", _ctx(tiny_world, tmp_path, val_dir=str(foreign)))
    with pytest.raises(ValueError, match="source-cls: unknown settings \\['epoch'\\]"):
        source_cls.transfer(_rep(), "conv5", _ctx(tiny_world, tmp_path, epoch=3))
    with pytest.raises(ValueError, match="unknown protocol 'fc8'"):
        source_cls.transfer(_rep(), "fc8", _ctx(tiny_world, tmp_path))


SUITE = """
name = "layers"
backbone = "alexnet-small"
seeds = 1

[methods]
use = ["random"]

[tasks]
use = ["source-cls", "voc07-cls"]

[tasks.source-cls]
protocols = ["conv1", "conv5", "knn-fc7"]
epochs = 1
batch_size = 16
knn_k = 3

[tasks.voc07-cls]
protocols = ["knn-fc7"]
knn_k = 5
"""


def test_cli_runs_source_cls_and_knn_end_to_end(tiny_world, tmp_path, one_thread):
    suite = tmp_path / "layers.toml"
    suite.write_text(SUITE)
    results = tmp_path / "results"
    args = ["run", "--suite", str(suite), "--data-root", str(tiny_world), "--results", str(results)]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    stored = {(r["task"], r["protocol"]): r for r in
              (json.loads(p.read_text()) for p in (results / "runs").rglob("*.json"))}
    assert set(stored) == {("source-cls", "conv1"), ("source-cls", "conv5"), ("source-cls", "knn-fc7"),
                           ("voc07-cls", "knn-fc7")}
    for protocol in ("conv1", "conv5", "knn-fc7"):
        r = stored[("source-cls", protocol)]
        assert r["status"] == "ok" and r["metric"] == "top1"
        assert 0 <= r["value"] <= r["per_metric"]["top5"] <= 100
        lines = (Path(r["export"]["dir"]) / "top5_val.txt").read_text().splitlines()
        assert len(lines) == r["info"]["test_images"] == 40
    assert stored[("source-cls", "conv1")]["info"]["reinitialised"] == list(STAGES[1:])
    assert stored[("source-cls", "knn-fc7")]["info"]["knn_k"] == 3
    knn = stored[("voc07-cls", "knn-fc7")]
    assert knn["status"] == "ok" and knn["metric"] == "voc07-11pt" and knn["info"]["knn_k"] == 5
    # the exported votes score the same offline
    offline = CliRunner().invoke(main, ["evaluate", "cls", "--devkit", str(tiny_world), "--year", "2007",
                                        "--split", "test", "--results", knn["export"]["dir"], "--json"])
    assert offline.exit_code == 0, offline.output
    assert json.loads(offline.output)["mean"] == pytest.approx(knn["value"] / 100)
    # each split's features were computed once and cached
    assert len(list((results / "cache" / "features").glob("knn-fc7-*.npy"))) == 2
    assert len(list((results / "cache" / "features").glob("source-cls-knn-fc7-*.npy"))) == 2
