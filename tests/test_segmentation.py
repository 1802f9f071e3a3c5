"""FCN-32s pieces (fc -> conv conversion, bilinear upsampling, alignment) and the task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchharness.backbones import build
from benchharness.interfaces import RunContext
from benchharness.representation import Representation
from benchharness.tasks import segmentation
from benchharness.tasks.batching import normalised_batch
from benchharness.tasks.fcn import FCN32s, bilinear_kernel, fc_to_conv


@pytest.mark.parametrize("backbone", ["alexnet-small", "alexnet", "caffenet"])
def test_fc_to_conv_preserves_fc7_at_the_centre(backbone):
    torch.manual_seed(0)
    trunk = build(backbone).eval()
    size = trunk.spec.input_size
    x = torch.randn(2, 3, size, size)
    expected = trunk(x)
    conv6, conv7 = fc_to_conv(trunk)
    h = trunk.forward_to(x, "conv5")
    assert h.shape[-1] == trunk.spec.pool_out  # at its own input size the map is fc6's input
    out = F.relu(conv7(F.relu(conv6(h))))
    assert out.shape[-2:] == (1, 1)
    torch.testing.assert_close(out[..., 0, 0], expected, atol=1e-4, rtol=1e-4)

    # the same inside the segmentation network (its own copies of the converted layers, the
    # trunk's activations and dropout order)
    model = FCN32s(Representation(trunk, backbone), 21).eval()
    cells = model.fully_connected(model.conv5(x))
    torch.testing.assert_close(cells[..., 0, 0], expected, atol=1e-4, rtol=1e-4)


def test_bilinear_kernel_upsamples_like_bilinear_interpolation():
    factor = 8
    weight = bilinear_kernel(2, 2 * factor)
    assert weight[0, 1].abs().sum() == 0  # channels are upsampled on their own
    x = torch.rand(1, 2, 5, 5)
    up = F.conv_transpose2d(x, weight, stride=factor)
    crop = factor // 2
    up = up[..., crop:crop + 5 * factor, crop:crop + 5 * factor]
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    inner = slice(factor, 4 * factor)  # away from the borders, where padding differs
    torch.testing.assert_close(up[..., inner, inner], ref[..., inner, inner], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(64, 64), (50, 77), (113, 160)])
def test_output_covers_the_input_pixel_for_pixel(size):
    torch.manual_seed(0)
    model = FCN32s(Representation(build("alexnet-small"), "alexnet-small"), 21).eval()
    with torch.no_grad():
        model.score.weight.normal_()
        out = model(model.input.normalise(torch.rand(2, 3, *size)))
    assert out.shape == (2, 21, *size)
    assert out.abs().sum() > 0


def test_score_map_is_aligned_with_the_input():
    """A bright square in the input moves the score map's peak with it (no shift from padding
    or cropping): the arg-max of the response lies inside the square."""
    torch.manual_seed(0)
    trunk = build("alexnet-small")
    model = FCN32s(Representation(trunk, "alexnet-small"), 1).eval()
    with torch.no_grad():
        model.score.weight.fill_(0.0)
        base = torch.full((1, 3, 128, 128), 0.5)
        ref = model.fc7(F.relu(model.fc6(model.conv5(model.input.normalise(base)))))
        for top, left in ((16, 24), (72, 56)):
            x = base.clone()
            x[..., top:top + 32, left:left + 32] = 1.0
            feats = model.fc7(F.relu(model.fc6(model.conv5(model.input.normalise(x)))))
            # score = how much fc7 changed from the plain image, so it peaks at the square
            model.score.weight.copy_((feats - ref).mean((0, 2, 3)).view(1, -1, 1, 1))
            out = model(model.input.normalise(x))[0, 0]
            y, x_ = divmod(int(out.argmax()), out.shape[1])
            assert top - 8 <= y < top + 40 and left - 8 <= x_ < left + 40


def test_fc6_8_freezes_the_convolutions():
    model = FCN32s(Representation(build("alexnet-small"), "alexnet-small"), 21, frozen_conv=True,
                   train_upsampling=True)
    model.train()
    out = model(model.input.normalise(torch.rand(1, 3, 64, 64)))
    out.sum().backward()
    assert model.convs["conv1"].conv.weight.grad is None
    assert model.upscore.weight.grad is not None
    groups = model.param_groups(0.01, 0.001)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())


def test_padding_is_the_mean_colour_and_carries_no_loss():
    images = [torch.zeros(3, 4, 6, dtype=torch.uint8), torch.full((3, 6, 3), 255, dtype=torch.uint8)]
    masks = [torch.full((4, 6), 2, dtype=torch.uint8), torch.full((6, 3), 255, dtype=torch.uint8)]
    convention = Representation(build("alexnet-small"), "alexnet-small").input
    x = normalised_batch(images, convention, torch.device("cpu"))
    y = segmentation.label_batch(masks, torch.device("cpu"))
    assert x.shape == (2, 3, 6, 6) and y.shape == (2, 6, 6)
    torch.testing.assert_close(x[0, :, :4, :6], convention.normalise(torch.zeros(1, 3, 4, 6))[0])
    torch.testing.assert_close(x[1, :, :, :3], convention.normalise(torch.ones(1, 3, 6, 3))[0])
    assert (x[0, :, 4:] == 0).all() and (x[1, :, :, 3:] == 0).all()  # zero = the mean colour
    assert (y[0, :4, :6] == 2).all() and (y[0, 4:] == 255).all() and (y[1] == 255).all()
    resized = normalised_batch(images, convention, torch.device("cpu"), sizes=[(8, 12), (3, 2)])
    assert resized.shape == (2, 3, 8, 12)
    torch.testing.assert_close(resized[1, :, :3, :2], convention.normalise(torch.ones(1, 3, 3, 2))[0])


def test_segmentation_transfer_on_the_tiny_world(tiny_world, tmp_path):
    rep = Representation(build("alexnet-small"), "alexnet-small")
    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path, "alexnet-small",
                     config={"epochs": 1, "batch_size": 4})
    out = segmentation.transfer(rep, "all", ctx)
    gt = out.ground_truth
    assert out.metric == "miou" and out.info["split"] == "val" and out.info["year"] == "2012"
    for image_id in gt.image_ids:
        mask = out.predictions.masks[image_id]
        assert mask.shape == gt.mask(image_id).shape and mask.dtype == np.uint8
        assert mask.max() <= 20
    with pytest.raises(ValueError, match="unknown protocol"):
        segmentation.transfer(rep, "fc8", ctx)


def test_sbd_masks_are_read_and_val_images_left_out(tmp_path):
    import scipy.io
    from PIL import Image

    root = tmp_path / "dataset"
    (root / "cls").mkdir(parents=True)
    (root / "img").mkdir()
    (root / "train.txt").write_text("2008_000001\n2008_000002\n")
    (root / "val.txt").write_text("2008_000003\n2008_000001\n")
    for k, image_id in enumerate(["2008_000001", "2008_000002", "2008_000003"]):
        mask = np.full((5, 7), k, dtype=np.uint8)
        mask[0, 0] = 15
        scipy.io.savemat(root / "cls" / f"{image_id}.mat", {"GTcls": {"Segmentation": mask}})
        Image.fromarray(np.zeros((5, 7, 3), dtype=np.uint8)).save(root / "img" / f"{image_id}.jpg")
    found = list(segmentation.read_sbd(root, exclude={"2008_000002"}))
    train_only = [i for i, _, _ in segmentation.read_sbd(root, set(), splits=("train",))]
    assert train_only == ["2008_000001", "2008_000002"]
    assert [i for i, _, _ in found] == ["2008_000001", "2008_000003"]  # once each, excluded out
    image_id, image, mask = found[1]
    assert image.shape == (3, 5, 7) and mask.shape == (5, 7)
    assert mask[0, 0] == 15 and (mask.ravel()[1:] == 2).all()
    (root / "cls" / "2008_000003.mat").write_bytes(b"broken")
    with pytest.raises(Exception, match="2008_000003.mat"):
        list(segmentation.read_sbd(root, exclude=set()))
    (root / "val.txt").unlink()
    with pytest.raises(Exception, match=r"val.txt: SBD split file missing"):
        list(segmentation.read_sbd(root, exclude=set()))


# --- the reference protocol: SBD, seg11valid, FCN-AlexNet's solver -------------------------------

def _split(root, year, name, ids):
    path = root / f"VOC{year}" / "ImageSets" / "Segmentation" / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def test_seg11valid_is_val_minus_sbd_train(tmp_path):
    from benchharness.data.voc.devkit import VOCDevkit
    from benchharness.data.voc.sbd import seg11valid
    from benchharness.interfaces import DataError

    devkit_root, sbd = tmp_path / "VOCdevkit", tmp_path / "sbd"
    sbd.mkdir()
    (sbd / "train.txt").write_text("2008_000002\n2008_000004\n2009_000001\n")
    (sbd / "val.txt").write_text("2008_000001\n")
    _split(devkit_root, "2012", "val", ["2008_000001", "2008_000002", "2008_000003", "2008_000004",
                                        "2010_000009"])
    devkit = VOCDevkit(devkit_root)
    ids, source = seg11valid(devkit, "2012", str(sbd))
    assert ids == ["2008_000001", "2008_000003", "2010_000009"]  # SBD val stays: only train is out
    assert source == "VOC2012 Segmentation val minus SBD train (3 images)"
    # FCN's own derivation: VOC2011's val, when the devkit holds it
    _split(devkit_root, "2011", "val", ["2008_000001", "2008_000002", "2008_000003"])
    ids, source = seg11valid(devkit, "2012", str(sbd))
    assert ids == ["2008_000001", "2008_000003"] and source.startswith("VOC2011")
    # a seg11valid.txt in the devkit wins
    _split(devkit_root, "2012", "seg11valid", ["2008_000003"])
    ids, source = seg11valid(devkit, "2012", "")
    assert ids == ["2008_000003"] and source.startswith("read from")
    (devkit_root / "VOC2012" / "ImageSets" / "Segmentation" / "seg11valid.txt").unlink()
    with pytest.raises(DataError, match=r"seg11valid\.txt: seg11valid is not in the devkit; set sbd_root"):
        seg11valid(devkit, "2012", "")


def test_loss_normalisation_follows_caffe_softmax_with_loss():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]],     # image 0: 2 classes x 1 x 2 pixels
                           [[[0.0, 0.0]], [[3.0, 0.0]]]])    # image 1
    labels = torch.tensor([[[0, 255]], [[1, 0]]])
    # by hand: -log softmax at the labelled pixels
    # image 0 pixel 0, label 0: log(1 + e^-2); image 1 pixel 0, label 1: log(1 + e^-3);
    # image 1 pixel 1, label 0 on (0, 0): log 2
    total = np.log1p(np.exp(-2)) + np.log1p(np.exp(-3)) + np.log(2)
    loss = segmentation.segmentation_loss
    assert loss(logits, labels, "valid").item() == pytest.approx(total / 3, rel=1e-6)
    assert loss(logits, labels, "batch_size").item() == pytest.approx(total / 2, rel=1e-6)
    assert loss(logits, labels, "none").item() == pytest.approx(total, rel=1e-6)
    with pytest.raises(ValueError, match="loss_normalization must be one of"):
        segmentation.SegConfig.from_mapping({"loss_normalization": "mean"}, "all")


def test_iter_size_steps_once_on_the_mean_of_its_minibatches(monkeypatch):
    """Caffe's iter_size: two minibatches of one image, one SGD step on the mean gradient."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))
            self.input = None

        def forward(self, x):  # logits = w_c * pixel value, per class
            return self.w.view(1, 2, 1, 1) * x[:, :1]

        def param_groups(self, lr, lr_pretrained):
            return [{"params": [self.w], "lr": lr}]

    monkeypatch.setattr(segmentation, "normalised_batch",
                        lambda images, convention, device: torch.stack([i.float() for i in images]))
    images = [torch.full((3, 1, 1), 1, dtype=torch.uint8), torch.full((3, 1, 1), 2, dtype=torch.uint8)]
    masks = [torch.tensor([[1]], dtype=torch.uint8), torch.tensor([[0]], dtype=torch.uint8)]
    cfg = segmentation.SegConfig(iterations=1, batch_size=1, iter_size=2, lr=0.5, momentum=0.0,
                                 weight_decay=0.0, lr_steps=0, flip=False)
    net = Net()
    ctx = RunContext(torch.device("cpu"), 0, None, None, "x", config={})
    segmentation.train(net, images, masks, cfg, ctx)
    # at w = 0 both classes have p = 1/2; d loss / d w_c = x * (p_c - [c == label])
    # image 1 (x = 1, label 1): (0.5, -0.5); image 2 (x = 2, label 0): (-1, 1); mean (-0.25, 0.25)
    torch.testing.assert_close(net.w.detach(), torch.tensor([0.125, -0.125]))


def _caffe_like(backbone="alexnet-small"):
    """A trunk with Caffe's rounded-up pools and CaffeNet's LRN after pool1 and pool2."""
    trunk = build(backbone)
    for name in ("conv1", "conv2", "conv5"):
        trunk.stage(name).pool.ceil_mode = True
    for name in ("conv1", "conv2"):
        trunk.stage(name).add_module("norm", torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0))
    return trunk


@pytest.mark.parametrize("size", [(64, 64), (50, 77), (113, 160)])
def test_fcn_geometry_with_ceil_mode_pools_and_lrn(size):
    from benchharness.tasks.fcn import output_length

    torch.manual_seed(0)
    model = FCN32s(Representation(_caffe_like(), "alexnet-small"), 21).eval()
    with torch.no_grad():
        model.score.weight.normal_()
        x = model.input.normalise(torch.rand(1, 3, *size))
        out = model(x)
        # the predicted coarse size equals the network's own
        h, w = size
        coarse = model.fc6(model.conv5(F.pad(x, (model.pad_before, 0, model.pad_before, 0))))
        assert coarse.shape[-2:] == (output_length(model.layers[:-2], h + model.pad_before),
                                     output_length(model.layers[:-2], w + model.pad_before))
    assert out.shape == (1, 21, *size) and out.abs().sum() > 0


def test_ceil_mode_output_length_by_hand():
    from benchharness.tasks.fcn import output_length

    pool = torch.nn.MaxPool2d(3, 2, ceil_mode=True)
    # Caffe: ceil((n - 3) / 2) + 1: 55 -> 27, 56 -> 28, 13 -> 6, 14 -> 7
    assert [output_length([pool], n) for n in (55, 56, 13, 14)] == [27, 28, 6, 7]
    assert [pool(torch.zeros(1, 1, 3, n)).shape[-1] for n in (55, 56, 13, 14)] == [27, 28, 6, 7]


def test_fixed_depthwise_upsampling_equals_the_full_bilinear_deconvolution():
    rep = Representation(build("alexnet-small"), "alexnet-small")
    full, fixed = FCN32s(rep, 21, train_upsampling=True), FCN32s(rep, 21)
    assert full.upscore.groups == 1 and fixed.upscore.groups == 21
    torch.manual_seed(0)
    for model in (full, fixed):
        model.eval()
        torch.nn.init.normal_(model.score.weight, std=0.1)
    fixed.score.load_state_dict(full.score.state_dict())
    x = rep.input.normalise(torch.rand(2, 3, 70, 90))
    torch.testing.assert_close(fixed(x), full(x), rtol=1e-5, atol=1e-5)


def test_fixed_upsampling_is_not_trained():
    model = FCN32s(Representation(build("alexnet-small"), "alexnet-small"), 21, train_upsampling=False)
    before = model.upscore.weight.detach().clone()
    model(model.input.normalise(torch.rand(1, 3, 64, 64))).sum().backward()
    assert model.upscore.weight.grad is None
    assert all(p is not model.upscore.weight for g in model.param_groups(0.01, 0) for p in g["params"])
    torch.testing.assert_close(model.upscore.weight, before)


def test_reference_setup_sbd_train_and_seg11valid_on_the_tiny_world(tiny_world, tmp_path):
    """FCN's setup as voc-transfer.toml gives it: SBD train alone trains (found under the data
    root), seg11valid = VOC2012 val minus SBD train scores."""
    from benchharness.data.synthetic.sbd import SBD_DIR
    from benchharness.data.voc.devkit import VOCDevkit, locate_devkit
    from benchharness.data.voc.sbd import read_sbd_split

    devkit = VOCDevkit(locate_devkit(tiny_world))
    val = devkit.read_split("2012", "val", "Segmentation")
    sbd_train = read_sbd_split(tiny_world / SBD_DIR, "train")
    rep = Representation(build("alexnet-small"), "alexnet-small")
    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path / "cache", "alexnet-small",
                     config={"iterations": 2, "batch_size": 1, "iter_size": 2, "voc_train": False,
                             "sbd_root": "benchmark_RELEASE/dataset", "sbd_splits": ["train"],
                             "test_split": "seg11valid", "lr_steps": 0, "flip": False,
                             "train_upsampling": False})
    out = segmentation.transfer(rep, "all", ctx)
    expected = [i for i in val if i not in set(sbd_train)]
    assert out.info["train_images"] == out.info["sbd_images"] == len(sbd_train)
    assert list(out.ground_truth.image_ids) == expected
    assert out.info["split_source"] == f"VOC2012 Segmentation val minus SBD train ({len(expected)} images)"
    assert set(out.predictions.masks) == set(expected) and out.info["iterations"] == 2


def test_a_relative_sbd_root_is_found_under_the_data_root(tmp_path, monkeypatch):
    from benchharness.tasks.settings import under_data_root

    (tmp_path / "data" / "benchmark_RELEASE" / "dataset").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    found = under_data_root("benchmark_RELEASE/dataset", tmp_path / "data")
    assert found == str(tmp_path / "data" / "benchmark_RELEASE" / "dataset")
    assert under_data_root("elsewhere/dataset", tmp_path / "data") == "elsewhere/dataset"
    assert under_data_root("", tmp_path / "data") == ""


def test_the_synthetic_world_has_sbd_and_a_proper_seg11valid(tiny_world, tmp_path):
    from benchharness.data.synthetic.sbd import SBD_DIR, mat_bytes, write_sbd
    from benchharness.data.voc.devkit import VOCDevkit, locate_devkit
    from benchharness.data.voc.sbd import read_sbd_mask, read_sbd_split, seg11valid
    from benchharness.interfaces import DataError

    devkit = VOCDevkit(locate_devkit(tiny_world))
    sbd = tiny_world / SBD_DIR
    train, val = (devkit.read_split("2012", s, "Segmentation") for s in ("train", "val"))
    sbd_train = read_sbd_split(sbd, "train")
    assert set(train) < set(sbd_train) and set(sbd_train) - set(train) < set(val)
    ids, _ = seg11valid(devkit, "2012", str(sbd))
    assert 0 < len(ids) < len(val) and not set(ids) & set(sbd_train)
    np.testing.assert_array_equal(read_sbd_mask(sbd, val[0]), devkit.read_mask("2012", val[0]))
    # byte-identical on every write (no creation time in the MAT header)
    assert mat_bytes({"GTcls": {"Segmentation": np.eye(3, dtype=np.uint8)}}) == \
        mat_bytes({"GTcls": {"Segmentation": np.eye(3, dtype=np.uint8)}})
    with pytest.raises(DataError, match="already exists"):
        write_sbd(tiny_world)
