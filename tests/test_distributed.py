"""Data-parallel training inside a job: gloo on the CPU, 2 processes.

The DDP-averaged gradient of the ranks' shares equals the single-process gradient of the whole
minibatch; a short supervised pretraining on 2 processes gives one process's weights; results
and representations state the world size, the global batch and the learning rate.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
from torch import nn

from benchharness import distributed
from benchharness.interfaces import BenchharnessError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def _batch(n: int = 7):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=gen), torch.randint(5, (n,), generator=gen)


def _gradient_rank(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    device = distributed.setup("cpu")
    try:
        model = _small_model().to(device)
        net = distributed.wrap(model)
        x, y = _batch()
        part = nn.functional.cross_entropy(net(distributed.shard(x)), distributed.shard(y),
                                           reduction="sum")
        distributed.global_mean(part, len(x)).backward()
        if distributed.is_main():
            torch.save({"grads": [p.grad for p in model.parameters()],
                        "shares": [distributed._share_of(len(x), r, size) for r in range(size)],
                        "info": distributed.describe(len(x), 0.1)}, out)
    finally:
        distributed.teardown()


def test_ddp_gradient_equals_whole_batch_gradient(tmp_path):
    out = tmp_path / "grads.pt"
    torch.multiprocessing.spawn(_gradient_rank, args=(2, _free_port(), str(out)), nprocs=2)
    found = torch.load(out, weights_only=False)
    model = _small_model()
    x, y = _batch()
    nn.functional.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(found["grads"], [p.grad for p in model.parameters()])
    assert [(s.start, s.stop) for s in found["shares"]] == [(0, 4), (4, 7)]  # 7 = 4 + 3
    assert found["info"]["world_size"] == 2 and found["info"]["backend"] == "gloo"
    assert found["info"]["per_rank_batch_size"] == [4, 3]


def test_single_process_helpers_are_no_ops():
    assert distributed.world() == (0, 1) and distributed.is_main() and not distributed.active()
    x = torch.arange(5)
    model = nn.Linear(2, 2)
    assert distributed.shard(x) is not None and torch.equal(distributed.shard(x), x)
    assert distributed.wrap(model) is model
    loss = torch.tensor(6.0)
    assert distributed.global_mean(loss, 3).item() == 2.0
    assert distributed.average(1.5) == 1.5 and distributed.describe(16, 0.1) is None
    with distributed.main_first():
        pass
    assert distributed.setup("cpu") == torch.device("cpu")  # no WORLD_SIZE: nothing joined
    assert not distributed.active()


def test_backend_follows_the_device():
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    assert distributed.backend_for(torch.device("cuda", 0)) == "nccl"


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_nproc_must_be_a_positive_integer(bad):
    with pytest.raises(BenchharnessError, match="positive integer"):
        distributed.check_nproc(bad, "cpu")


def test_nproc_may_not_exceed_visible_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.check_nproc(2, "cuda") == 2
    with pytest.raises(BenchharnessError, match="3 processes per job.*2 CUDA device"):
        distributed.check_nproc(3, "cuda")
    assert distributed.check_nproc(3, "cpu") == 3  # gloo processes on a CPU: any number


def test_suite_and_cli_check_nproc(tmp_path, fast_suite):
    from benchharness.suite import load_suite

    text = fast_suite.read_text() + "\n[executor]\nnproc = 0\n"
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(BenchharnessError, match="nproc"):
        load_suite(str(bad))
    good = tmp_path / "good.toml"
    good.write_text(fast_suite.read_text() + "\n[executor]\nnproc = 2\n")
    assert load_suite(str(good)).executor["nproc"] == 2


SUPERVISED = {"epochs": 1, "batch_size": 8, "lr": 0.02}


def _supervised_context(world: Path, tmp_path: Path, config: dict):
    from benchharness.interfaces import RunContext
    from benchharness.plugins import get_registry

    registry = get_registry()
    return registry.get("methods", "supervised"), RunContext(
        device=torch.device("cpu"), seed=0, data_root=world, cache_dir=tmp_path / "cache",
        backbone="alexnet-small", config=config, log=lambda msg: None,
        backbone_factory=registry.get("backbones", "alexnet-small").build)


def test_supervised_pretraining_on_two_processes_matches_one(tiny_world, tmp_path):
    from benchharness import ddp_job

    method, ctx = _supervised_context(tiny_world, tmp_path, SUPERVISED)
    one = ddp_job.pretrain(method, ctx, nproc=1)
    two = ddp_job.pretrain(method, ctx, nproc=2)
    assert "distributed" not in one.meta
    assert two.meta["distributed"] == {"world_size": 2, "backend": "gloo", "effective_batch_size": 8,
                                       "batch_unit": "images", "per_rank_batch_size": [4, 4],
                                       "lr": 0.02}
    torch.testing.assert_close(two.network.state_dict(), one.network.state_dict(),
                               rtol=1e-4, atol=1e-5)
    assert not any((tmp_path / "cache" / ".ddp").iterdir())  # the launch folder is removed


def test_a_failing_rank_fails_the_call_with_its_message(tiny_world, tmp_path):
    from benchharness import ddp_job

    method, ctx = _supervised_context(tiny_world, tmp_path, {**SUPERVISED, "batch_size": 1})
    with pytest.raises(ddp_job.DistributedJobError, match="cannot be split among 2 processes"):
        ddp_job.pretrain(method, ctx, nproc=2)


@pytest.mark.slow
def test_runner_records_the_distributed_training(tiny_world, tmp_path, fast_suite):
    from benchharness.plugins import get_registry
    from benchharness.runner import Runner, plan
    from benchharness.suite import load_suite

    suite = load_suite(str(fast_suite))
    suite.method_config["supervised"] = dict(SUPERVISED)
    registry = get_registry()
    the_plan = plan(suite, registry, tiny_world, methods=["supervised"], protocols=["all"], seeds=1)
    runner = Runner(registry, tmp_path / "results", device="cpu", log=lambda msg: None, progress=None)
    runner.nproc = 2
    assert runner.run(the_plan) == {"done": 1, "skipped": 0, "failed": 0}
    [path] = (tmp_path / "results" / "runs").rglob("*.json")
    result = json.loads(path.read_text())
    assert result["status"] == "ok"
    assert result["info"]["distributed"] == {
        "world_size": 2, "backend": "gloo", "effective_batch_size": 16, "batch_unit": "images",
        "per_rank_batch_size": [8, 8], "lr": 0.01}
    assert result["representation"]["distributed"]["effective_batch_size"] == 8


@pytest.mark.parametrize("args, message", [
    (["--gpus-per-job", "0"], "positive integer, got 0"),
    (["--gpus-per-job", "2", "--executor", "pool"], "needs the inline or submitit executor"),
])
def test_run_refuses_bad_gpus_per_job(tiny_world, tmp_path, fast_suite, args, message):
    from click.testing import CliRunner

    from benchharness.cli import main

    got = CliRunner().invoke(main, ["run", "--suite", str(fast_suite), "--data-root", str(tiny_world),
                                    "--results", str(tmp_path / "r"), "--device", "cpu", *args])
    assert got.exit_code == 2 and message in got.output
    assert not (tmp_path / "r" / "runs").exists()


# --- the `all` fine-tuning loops of the three tasks: 2 gloo processes against 1 -------------

def _ranks(rank: int, size: int, port: int, out: str, fn_name: str, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.setup("cpu")
    try:
        value = globals()[fn_name](*args)
        if distributed.is_main():
            torch.save(value, out)
    finally:
        distributed.teardown()


def _on_two_processes(tmp_path: Path, fn, *args):
    """``fn(*args)`` run on 2 gloo processes; rank 0's value."""
    out = tmp_path / f"{fn.__name__}.pt"
    torch.multiprocessing.spawn(_ranks, args=(2, _free_port(), str(out), fn.__name__, args), nprocs=2)
    return torch.load(out, weights_only=False)


def _context(world, cache):
    from benchharness.interfaces import RunContext

    return RunContext(torch.device("cpu"), 0, world, cache, "alexnet-small", config={})


def _representation():
    from benchharness.backbones import build
    from benchharness.representation import Representation

    torch.manual_seed(0)
    return Representation(build("alexnet-small"), "alexnet-small")


def _cls_weights(world: Path, cache: Path) -> dict:
    from benchharness.data.voc.devkit import VOCDevkit, locate_devkit
    from benchharness.tasks import classification as cls

    cfg = cls.ClsConfig(iterations=3, batch_size=5, input_size=64, store_size=80, clip_gradients=10.0)
    ctx = _context(world, cache)
    with distributed.main_first():
        _, labels, images = cls.load_split(VOCDevkit(locate_devkit(world)), "2007", "trainval", 80, ctx)
    rep = _representation()
    model = cls.Classifier(rep, 20, None)
    cls.train(model, rep, images, labels, cfg, ctx)
    return model.state_dict()


def _det_weights(world: Path, cache: Path) -> dict:
    from benchharness.data.voc.devkit import VOCDevkit, locate_devkit
    from benchharness.evaluators.ground_truth import det_ground_truth
    from benchharness.tasks import detection
    from benchharness.tasks.fast_rcnn import FastRCNN

    cfg = detection.DetConfig(iterations=3, images_per_batch=3, scale=96, max_size=160,
                              rois_per_image=16, proposals="selective_search_data")
    ctx = _context(world, cache)
    devkit = VOCDevkit(locate_devkit(world))
    with distributed.main_first():
        data, _ = detection.load_split(devkit, "trainval", det_ground_truth(devkit, "2007", "trainval"),
                                       cfg, ctx)
    rep = _representation()
    model = FastRCNN(rep, 20)
    detection.train(model, rep, data, cfg, ctx)
    return model.state_dict()


def _fcn_weights(world: Path, cache: Path, **settings) -> dict:
    from benchharness.data.voc.devkit import VOCDevkit, locate_devkit
    from benchharness.tasks import segmentation as seg
    from benchharness.tasks.fcn import FCN32s

    cfg = seg.SegConfig(iterations=2, lr=0.01, **settings)
    ctx = _context(world, cache)
    images, masks, _ = seg.load_train(VOCDevkit(locate_devkit(world)), cfg, set(), ctx)
    assert len({im.shape for im in images}) > 1  # each share is padded as the whole minibatch
    rep = _representation()
    model = FCN32s(rep, 21)
    seg.train(model, images, masks, cfg, ctx)
    return model.state_dict()


def _seg_weights(world: Path, cache: Path) -> dict:
    return _fcn_weights(world, cache, batch_size=3, iter_size=2)


def _seg_by_turns_weights(world: Path, cache: Path) -> dict:
    """FCN's own shape, one image per minibatch, accumulated: the ranks take turns (3 + 2)."""
    return _fcn_weights(world, cache, batch_size=1, iter_size=5)


@pytest.mark.parametrize("weights", [pytest.param(_cls_weights, marks=pytest.mark.slow),
                                     _det_weights, _seg_weights, _seg_by_turns_weights],
                         ids=["voc07-cls", "voc07-det", "voc12-seg", "voc12-seg-batch1"])
def test_all_fine_tuning_on_two_processes_matches_one(tiny_world, tmp_path, weights):
    """Shares of 3 + 2 (cls), 2 + 1 images (det, seg; seg accumulating 2 minibatches)."""
    one = weights(tiny_world, tmp_path / "one")
    two = _on_two_processes(tmp_path, weights, tiny_world, tmp_path / "two")
    torch.testing.assert_close(two, one, rtol=1e-4, atol=1e-5)
