"""The frozen-feature cache key holds everything that changes features (issue 13, item 7)."""

from __future__ import annotations

import shutil
from dataclasses import replace

import torch

from benchharness import __version__
from benchharness.backbones import build
from benchharness.representation import InputConvention, Representation
from benchharness.tasks import crop_bank
from benchharness.tasks.crop_bank import feature_cache_key

CPU = torch.device("cpu")
SETTINGS = {"layer": "conv5", "split": "trainval", "store": 80, "input": 64, "k": 10,
            "scale": (0.25, 1.0), "seed": 0, "rescale": False}


def _rep(convention: InputConvention | None = None, config_hash: str | None = "rep123"):
    meta = {"config_hash": config_hash} if config_hash else {}
    return Representation(build("alexnet-small"), "alexnet-small",
                          input=convention or InputConvention(), learned_stages=(), meta=meta)


def _key(rep, data_root, amp="off", device=CPU, **settings):
    return feature_cache_key(rep, device=device, amp=amp, data_root=data_root,
                             settings={**SETTINGS, **settings})


def test_same_settings_same_key(tiny_world):
    assert _key(_rep(), tiny_world) == _key(_rep(), tiny_world)


def test_amp_mode_changes_the_key(tiny_world):
    fp32, bf16 = _key(_rep(), tiny_world, amp="off"), _key(_rep(), tiny_world, amp="bf16")
    assert fp32 != bf16
    # what matters is the arithmetic: "auto" on the CPU is fp32, on CUDA bf16
    assert _key(_rep(), tiny_world, amp="auto") == fp32
    assert _key(_rep(), tiny_world, amp="auto", device=torch.device("cuda")) == bf16


def test_every_field_of_the_input_convention_changes_the_key(tiny_world):
    base = InputConvention()
    variants = [replace(base, mode="lab-l", mean=(50.0,), std=(50.0,)),
                replace(base, mean=(0.5, 0.5, 0.5)), replace(base, std=(1.0, 1.0, 1.0))]
    keys = {_key(_rep(v), tiny_world) for v in variants}
    assert len(keys) == 3 and _key(_rep(base), tiny_world) not in keys


def test_crop_settings_backbone_version_and_data_change_the_key(tiny_world, tmp_path, monkeypatch):
    base = _key(_rep(), tiny_world)
    for name, value in [("store", 96), ("input", 56), ("k", 5), ("scale", (0.5, 1.0)), ("seed", 1),
                        ("split", "test"), ("layer", "fc7")]:
        assert _key(_rep(), tiny_world, **{name: value}) != base, name
    other_backbone = _rep()
    other_backbone.backbone = "caffenet"
    assert _key(other_backbone, tiny_world) != base
    assert _key(_rep(config_hash="other"), tiny_world) != base

    copy = tmp_path / "copy"  # a copy of the world is the same data; with a split changed it is not
    shutil.copytree(tiny_world / "VOCdevkit", copy / "VOCdevkit")
    shutil.copy(tiny_world / "world.json", copy / "world.json")
    assert _key(_rep(), copy) == base
    split = copy / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "trainval.txt"
    split.write_text("\n".join(split.read_text().split()[:-1]) + "\n")
    assert _key(_rep(), copy) != base

    monkeypatch.setattr(crop_bank, "__version__", __version__ + ".post1")
    assert _key(_rep(), tiny_world) != base


def test_no_config_hash_means_no_cache(tiny_world):
    assert _key(_rep(config_hash=None), tiny_world) is None


def test_a_run_under_another_amp_mode_computes_its_own_features(tmp_path, tiny_world, fast_suite):
    """voc07-cls under fc8 with amp off, then bf16 (autocast on the CPU): the second run does not
    reuse the first one's features, and a repeat of the first does."""
    from benchharness.plugins import get_registry
    from benchharness.runner import Runner, plan
    from benchharness.suite import load_suite

    reg, suite = get_registry(), load_suite(str(fast_suite))
    runner = Runner(reg, tmp_path / "results", device="cpu", log=lambda m: None, progress=None)
    infos = []
    for amp in ("off", "bf16", "off"):
        the_plan = plan(suite, reg, tiny_world, methods=["random"], protocols=["fc8"], seeds=1,
                        task_overrides={"amp": amp})
        [job] = the_plan.jobs
        runner.store.path_for(job).unlink(missing_ok=True)
        result = runner.run_job(the_plan, job, {})
        assert result["status"] == "ok", result.get("error")
        infos.append(result["info"]["features_from_cache"])
    assert infos == [False, False, True]
    assert len(list((tmp_path / "results" / "cache" / "features").glob("*.safetensors"))) == 4
