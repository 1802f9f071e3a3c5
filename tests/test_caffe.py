"""Caffe models read without Caffe: both encodings, the CaffeNet forward against an independent
NumPy computation of Caffe's layers, prototxt layer order, and every bad file named."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from benchharness.caffe_model import read_mean, read_net, to_trunk
from benchharness.caffe_proto import messages
from benchharness.checkpoint_io import LoadOptions, load_checkpoint
from benchharness.interfaces import DataError
from caffe_files import caffenet_file, caffenet_layers, net_message, prototxt_text

# ---------------------------------------------------------------- Caffe's layers, by hand (NumPy)


def np_conv(x, w, b, stride, pad, group):
    """Caffe's grouped convolution by im2col, one group at a time."""
    c, h, wd = x.shape
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    k = w.shape[2]
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.empty((w.shape[0], oh, ow))
    cg, og = c // group, w.shape[0] // group
    for g in range(group):
        xs = x[g * cg:(g + 1) * cg]
        cols = np.stack([xs[:, i * stride:i * stride + k, j * stride:j * stride + k].reshape(-1)
                         for i in range(oh) for j in range(ow)], 1)
        out[g * og:(g + 1) * og] = (w[g * og:(g + 1) * og].reshape(og, -1) @ cols).reshape(og, oh, ow)
    return out + b[:, None, None]


def np_maxpool_caffe(x, k=3, s=2):
    """Caffe's max-pool: output size rounded up, windows clipped at the border."""
    c, h, w = x.shape
    oh, ow = int(np.ceil((h - k) / s)) + 1, int(np.ceil((w - k) / s)) + 1
    out = np.empty((c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, i * s:min(i * s + k, h), j * s:min(j * s + k, w)].max(axis=(1, 2))
    return out


def np_lrn_caffe(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's across-channel LRN: x / (k + alpha / n * sum of squares over n channels) ** beta."""
    sq = np.pad(x ** 2, ((size // 2, size // 2), (0, 0), (0, 0)))
    scale = k + alpha / size * np.stack([sq[i:i + size].sum(0) for i in range(x.shape[0])])
    return x * scale ** -beta


def np_caffenet_fc7(blobs, bgr_mean_subtracted, lrn_before_pool=False):
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    x = bgr_mean_subtracted
    for i in range(5):
        w, b = blobs[f"conv{i + 1}"]
        x = relu(np_conv(x, w, b, 4 if i == 0 else 1, (0, 2, 1, 1, 1)[i], (1, 2, 1, 2, 2)[i]))
        if i < 2:
            x = np_maxpool_caffe(np_lrn_caffe(x)) if lrn_before_pool else np_lrn_caffe(np_maxpool_caffe(x))
        elif i == 4:
            x = np_maxpool_caffe(x)
    x = x.reshape(-1)
    for name in ("fc6", "fc7"):
        w, b = blobs[name]
        x = relu(w @ x + b)
    return x


def _image(seed=0, size=227):
    return np.random.default_rng(seed).uniform(0, 1, (3, size, size)).astype(np.float32)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("encoding,legacy,double", [("layer", False, False), ("layers", True, False),
                                                    ("layer", True, True)])
def test_caffemodel_round_trip_both_encodings(tmp_path, encoding, legacy, double):
    written = caffenet_file(tmp_path / "m.caffemodel", encoding, legacy_shapes=legacy, double=double)
    net = read_net(tmp_path / "m.caffemodel")
    assert net.encoding == ("layer" if encoding == "layer" else "layers (V1)")
    for name, blobs in written.items():
        got = net.layer(name).blobs
        assert len(got) == len(blobs)
        for a, b in zip(got, blobs):
            assert np.array_equal(a.reshape(b.shape), b)
    loaded = to_trunk(net)
    assert loaded.used == {s: s for s in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")}
    assert loaded.spec_fields["groups"] == (1, 2, 1, 2, 2)
    assert loaded.spec_fields["lrn"] == "after_pool"
    assert [u.split(" ")[0] for u in loaded.unused] == ["fc8"]  # listed, not dropped silently
    assert torch.equal(loaded.state["conv2.conv.weight"], torch.from_numpy(written["conv2"][0]))
    assert torch.equal(loaded.state["fc7.fc.bias"], torch.from_numpy(written["fc7"][1]))


@pytest.mark.parametrize("lrn_before_pool", [False, True])
def test_caffenet_forward_equals_caffe_layers_by_hand(tmp_path, lrn_before_pool):
    written = caffenet_file(tmp_path / "m.caffemodel", lrn_before_pool=lrn_before_pool, seed=2)
    rep, report = load_checkpoint(tmp_path / "m.caffemodel", "caffenet")
    assert report["spec"]["lrn"] == ("before_pool" if lrn_before_pool else "after_pool")
    rgb = _image(1)
    bgr = rgb[::-1] * 255.0 - np.array([104.0, 117.0, 123.0])[:, None, None]
    expected = np_caffenet_fc7({k: v for k, v in written.items()}, bgr, lrn_before_pool)
    net = rep.network.eval()
    with torch.no_grad():
        got = net(rep.input.normalise(torch.from_numpy(rgb.copy())[None].double().float()))[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())


def test_prototxt_decides_the_order_of_lrn_and_pool(tmp_path):
    caffenet_file(tmp_path / "m.caffemodel", lrn_before_pool=False, seed=4)
    (tmp_path / "alexnet.prototxt").write_text(prototxt_text(caffenet_layers(lrn_before_pool=True)))
    plain, _ = load_checkpoint(tmp_path / "m.caffemodel", "caffenet")
    with_proto, report = load_checkpoint(tmp_path / "m.caffemodel", "caffenet",
                                         LoadOptions(prototxt=str(tmp_path / "alexnet.prototxt")))
    assert report["spec"]["lrn"] == "before_pool"
    assert list(plain.network.conv1._modules) == ["conv", "relu", "pool", "norm"]
    assert list(with_proto.network.conv1._modules) == ["conv", "relu", "norm", "pool"]
    x = plain.input.normalise(torch.from_numpy(_image(5))[None])
    with torch.no_grad():
        assert not torch.allclose(plain.network.eval().forward_to(x, "conv1"),
                                  with_proto.network.eval().forward_to(x, "conv1"))
    # a V1 text prototxt parses too, and a deploy.prototxt beside the model is found by itself
    (tmp_path / "deploy.prototxt").write_text(prototxt_text(caffenet_layers(lrn_before_pool=True), "layers"))
    _, beside = load_checkpoint(tmp_path / "m.caffemodel", "caffenet")
    assert beside["prototxt"].endswith("deploy.prototxt") and beside["spec"]["lrn"] == "before_pool"


def test_layer_map_and_fc_left_random(tmp_path):
    caffenet_file(tmp_path / "m.caffemodel")
    _, report = load_checkpoint(tmp_path / "m.caffemodel", "caffenet",
                                LoadOptions(layer_map={"fc6": "", "fc7": ""}))
    assert list(report["stages"]) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert {u.split(" ")[0] for u in report["unused"]} == {"fc6", "fc7", "fc8"}
    with pytest.raises(DataError, match=r"no layer 'conv_one' for stage conv1; the file holds: conv1 \(Convolution\)"):
        load_checkpoint(tmp_path / "m.caffemodel", "caffenet", LoadOptions(layer_map={"conv1": "conv_one"}))
    with pytest.raises(DataError, match="layer 'fc8' for stage conv5 is a InnerProduct"):
        load_checkpoint(tmp_path / "m.caffemodel", "caffenet", LoadOptions(layer_map={"conv5": "fc8"}))


def test_one_channel_conv1_gets_the_l_channel_convention(tmp_path):
    caffenet_file(tmp_path / "gray.caffemodel", in_channels=1)
    rep, report = load_checkpoint(tmp_path / "gray.caffemodel", "caffenet")
    assert rep.input.mode == "lab-l" and rep.input.mean == (50.0,)
    assert rep.network.conv1.conv.in_channels == 1
    x = rep.input.normalise(torch.rand(2, 3, 227, 227))
    assert rep.network.eval()(x).shape == (2, 24)


def test_mean_binaryproto_gives_the_per_channel_mean(tmp_path):
    caffenet_file(tmp_path / "m.caffemodel")
    blob = messages()["BlobProto"](num=1, channels=3, height=2, width=2)
    blob.data.extend([1, 2, 3, 6, 10, 10, 10, 10, 0, 0, 0, 4])
    (tmp_path / "mean.binaryproto").write_bytes(blob.SerializeToString())
    assert read_mean(tmp_path / "mean.binaryproto").shape == (3, 2, 2)
    rep, _ = load_checkpoint(tmp_path / "m.caffemodel", "caffenet",
                             LoadOptions(mean_file=str(tmp_path / "mean.binaryproto")))
    assert rep.input.mean == (3.0, 10.0, 1.0) and rep.input.channel_order == "bgr"


def test_bad_files_are_named_with_the_problem(tmp_path):
    caffenet_file(tmp_path / "good.caffemodel")
    raw = (tmp_path / "good.caffemodel").read_bytes()
    (tmp_path / "cut.caffemodel").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.caffemodel.*truncated or corrupt"):
        read_net(tmp_path / "cut.caffemodel")
    (tmp_path / "pickle.caffemodel").write_bytes(pickle.dumps({"conv1": [1, 2]}, protocol=4))
    with pytest.raises(DataError, match=r"pickle\.caffemodel.*pickle / torch\.save"):
        read_net(tmp_path / "pickle.caffemodel")
    (tmp_path / "empty.caffemodel").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.caffemodel.*holds no layers"):
        read_net(tmp_path / "empty.caffemodel")
    # a wrong shape: conv2's weights do not fit conv1's output under group 2
    layers = caffenet_layers()
    at = [layer[0] for layer in layers].index("conv2")
    name, kind, params, (w, b) = layers[at]
    layers[at] = (name, kind, params, [w[:, :3], b])

    (tmp_path / "shape.caffemodel").write_bytes(net_message(layers).SerializeToString())
    with pytest.raises(DataError, match=r"shape\.caffemodel.*'conv2' \(conv2\) has weights \(16, 3, 5, 5\) "
                                        r"with group 2, but its input has 8 channels"):
        load_checkpoint(tmp_path / "shape.caffemodel", "caffenet")
    # a missing layer
    no_conv3 = [layer for layer in caffenet_layers() if layer[0] != "conv3"]
    (tmp_path / "missing.caffemodel").write_bytes(net_message(no_conv3).SerializeToString())
    with pytest.raises(DataError, match=r"missing\.caffemodel.*no layer 'conv3' for stage conv3; the file holds"):
        load_checkpoint(tmp_path / "missing.caffemodel", "caffenet")
    # a layer the trunk cannot compute, inside the trunk
    bn = caffenet_layers(extra_after_conv2="BatchNorm")
    (tmp_path / "bn.caffemodel").write_bytes(net_message(bn).SerializeToString())
    with pytest.raises(DataError, match=r"bn2 \(BatchNorm\) sits between conv1 and fc7"):
        load_checkpoint(tmp_path / "bn.caffemodel", "caffenet")
    with pytest.raises(DataError, match=r"run it with --backbone caffenet"):
        load_checkpoint(tmp_path / "good.caffemodel", "alexnet")


def test_features_command_gives_caffes_fc7_and_convert_round_trips(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from benchharness.cli import main

    written = caffenet_file(tmp_path / "m.caffemodel", "layers", seed=7)
    images = tmp_path / "images"
    images.mkdir()
    rgb = [(np.random.default_rng(i).uniform(0, 1, (227, 227, 3)) * 255).round().astype(np.uint8)
           for i in range(2)]
    for i, name in enumerate(("b.png", "a.png")):  # rows follow sorted names: a.png first
        Image.fromarray(rgb[i]).save(images / name)
    Image.fromarray(rgb[0][:100, :150]).save(images / "c_small.png")  # goes through the test view
    runner = CliRunner()
    out = tmp_path / "fc7.npy"
    res = runner.invoke(main, ["features", str(tmp_path / "m.caffemodel"), "--layer", "fc7",
                               "--images", str(images), "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rows = np.load(out)
    assert rows.shape == (3, 24)
    assert (tmp_path / "fc7.npy.txt").read_text().split() == ["a.png", "b.png", "c_small.png"]
    for row, image in ((0, rgb[1]), (1, rgb[0])):
        bgr = image.transpose(2, 0, 1)[::-1].astype(np.float64) - np.array([104.0, 117.0, 123.0])[:, None, None]
        expected = np_caffenet_fc7(written, bgr)
        np.testing.assert_allclose(rows[row], expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())
    # convert -> safetensors carries layout and convention: same features without the caffemodel
    res = runner.invoke(main, ["convert", str(tmp_path / "m.caffemodel"), str(tmp_path / "m.safetensors")])
    assert res.exit_code == 0 and "not used: fc8" in res.output, res.output
    res = runner.invoke(main, ["features", str(tmp_path / "m.safetensors"), "--layer", "fc7",
                               "--images", str(images), "--out", str(tmp_path / "again.npy"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), rows)
    res = runner.invoke(main, ["inspect", str(tmp_path / "m.caffemodel"), "--json"])
    report = __import__("json").loads(res.output)
    assert report["stages"]["conv2"] == "conv2" and report["shapes"]["conv2.conv.weight"] == [16, 4, 5, 5]
    assert report["spec"]["lrn_alpha"] == 1e-4 and report["input"]["channel_order"] == "bgr"
    res = runner.invoke(main, ["inspect", str(tmp_path / "m.caffemodel"), "--backbone", "alexnet"])
    assert res.exit_code == 2 and "m.caffemodel" in res.output and "--backbone caffenet" in res.output


def test_fully_convolutional_fc6_fc7_read_as_the_same_matrices(tmp_path):
    layers = caffenet_layers(seed=3)
    conv_fc = []
    for name, kind, params, blobs in layers:
        if name == "fc6":
            kind, blobs = "Convolution", [blobs[0].reshape(32, 8, 6, 6), blobs[1]]
            params = {"num_output": 32, "kernel_size": 6, "group": 1, "pad": 0, "stride": 1}
        elif name == "fc7":
            kind, blobs = "Convolution", [blobs[0].reshape(24, 32, 1, 1), blobs[1]]
            params = {"num_output": 24, "kernel_size": 1, "group": 1, "pad": 0, "stride": 1}
        conv_fc.append((name, kind, params, blobs))
    (tmp_path / "ip.caffemodel").write_bytes(net_message(layers).SerializeToString())
    (tmp_path / "fcn.caffemodel").write_bytes(net_message(conv_fc).SerializeToString())
    a, b = (to_trunk(read_net(tmp_path / f)) for f in ("ip.caffemodel", "fcn.caffemodel"))
    assert a.spec_fields == b.spec_fields
    for key in a.state:
        assert torch.equal(a.state[key], b.state[key]), key


def test_random_caffenet_uses_caffes_fillers_and_input_convention(tmp_path):
    from benchharness.backbones import build
    from benchharness.interfaces import RunContext
    from benchharness.plugins import Registry
    from benchharness.representation import CAFFE_BGR

    torch.manual_seed(0)
    net = build("caffenet")
    assert net.conv2.conv.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert net.fc6.fc.weight.std().item() == pytest.approx(0.005, rel=0.02)
    assert set(net.conv1.conv.bias.tolist()) == {0.0} and set(net.conv2.conv.bias.tolist()) == {1.0}
    assert build("alexnet").conv2.conv.weight.std().item() == pytest.approx((2 / (64 * 25)) ** 0.5, rel=0.02)
    ctx = RunContext(torch.device("cpu"), 0, tmp_path, tmp_path, "caffenet", config={},
                     backbone_factory=lambda in_channels=3: build("caffenet", in_channels))
    rep = Registry().methods()["random"].pretrain(ctx)
    assert rep.input == CAFFE_BGR
    with torch.no_grad():  # 0-255 input stays in a trainable range (a He-scaled net gives ~1e3)
        fc7 = rep.network.eval()(rep.input.normalise(torch.rand(4, 3, 227, 227)))
    assert 0 < fc7.abs().max().item() < 50


def test_ceil_mode_pools_at_a_size_where_floor_differs(tmp_path):
    # at 231 px conv1 gives 56 x 56: Caffe's pool1 rounds up to 28 (floor would give 27)
    written = caffenet_file(tmp_path / "m.caffemodel", seed=6)
    rep, _ = load_checkpoint(tmp_path / "m.caffemodel", "caffenet")
    rgb = _image(2, size=231)
    x = rgb[::-1] * 255.0 - np.array([104.0, 117.0, 123.0])[:, None, None]
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    for i in range(5):
        w, b = written[f"conv{i + 1}"]
        x = relu(np_conv(x, w, b, 4 if i == 0 else 1, (0, 2, 1, 1, 1)[i], (1, 2, 1, 2, 2)[i]))
        x = np_lrn_caffe(np_maxpool_caffe(x)) if i < 2 else (np_maxpool_caffe(x) if i == 4 else x)
        if i == 0:
            assert x.shape[1:] == (28, 28)
    with torch.no_grad():
        got = rep.network.eval().forward_to(rep.input.normalise(torch.from_numpy(rgb.copy())[None]), "conv5")[0]
    assert tuple(got.shape) == x.shape
    np.testing.assert_allclose(got.numpy(), x, rtol=2e-4, atol=2e-4 * np.abs(x).max())


def test_lrn_layouts_the_trunk_cannot_hold_are_named(tmp_path):
    one_lrn = [layer for layer in caffenet_layers() if layer[0] != "norm2"]
    (tmp_path / "one.caffemodel").write_bytes(net_message(one_lrn).SerializeToString())
    with pytest.raises(DataError, match=r"one\.caffemodel.*LRN after conv1 is after_pool but after conv2 none"):
        load_checkpoint(tmp_path / "one.caffemodel", "caffenet")
    layers = caffenet_layers()
    at = [layer[0] for layer in layers].index("relu3")
    layers.insert(at + 1, ("norm3", "LRN", {"local_size": 5, "alpha": 1e-4, "beta": 0.75}, []))
    (tmp_path / "three.caffemodel").write_bytes(net_message(layers).SerializeToString())
    with pytest.raises(DataError, match=r"between conv3 and conv4 the file has \['LRN'\] \(norm3\)"):
        load_checkpoint(tmp_path / "three.caffemodel", "caffenet")


def test_a_prototxt_beside_the_model_changes_the_cache_key(tmp_path, tiny_world):
    from benchharness.plugins import Registry
    from benchharness.runner import plan
    from benchharness.suite import load_suite

    caffenet_file(tmp_path / "m.caffemodel")
    suite, registry = load_suite("voc-transfer"), Registry()

    def key():
        jobs = plan(suite, registry, tiny_world, [f"checkpoint:{tmp_path / 'm.caffemodel'}"],
                    ["voc07-cls"], ["fc8"], 1).jobs
        return jobs[0].representation_key

    alone = key()
    (tmp_path / "deploy.prototxt").write_text(prototxt_text(caffenet_layers(lrn_before_pool=True)))
    beside = key()
    (tmp_path / "deploy.prototxt").write_text(prototxt_text(caffenet_layers(lrn_before_pool=False)))
    assert len({alone, beside, key()}) == 3
