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


@pytest.mark.parametrize("backbone", ["alexnet-small", "alexnet"])
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

    # the same inside the segmentation network (its own copies of the converted layers)
    model = FCN32s(Representation(trunk, backbone), 21).eval()
    cells = F.relu(model.fc7(F.relu(model.fc6(model.conv5(x)))))
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
    model = FCN32s(Representation(build("alexnet-small"), "alexnet-small"), 21, frozen_conv=True)
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
