"""Fast R-CNN pieces (RoI sampling, box encoding, NMS), proposals and their cache, the task."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from torchvision.ops import box_iou

from benchharness.backbones import build
from benchharness.data.voc.devkit import VOCDevkit, locate_devkit
from benchharness.evaluators.voc_det import iou_inclusive
from benchharness.interfaces import DataError, RunContext
from benchharness.representation import Representation
from benchharness.tasks import detection, proposals
from benchharness.tasks.fast_rcnn import (FastRCNN, RoiSampler, box_coder, conv5_stride, detect,
                                          fast_rcnn_loss)


def test_box_encoding_round_trip():
    gen = torch.Generator().manual_seed(0)
    props = torch.rand(50, 2, generator=gen) * 100
    props = torch.cat([props, props + 5 + torch.rand(50, 2, generator=gen) * 80], 1)
    gt = props + torch.randn(50, 4, generator=gen) * 4
    gt[:, 2:] = torch.maximum(gt[:, 2:], gt[:, :2] + 1)
    coder = box_coder()
    deltas = coder.encode_single(gt, props)
    back = coder.decode_single(deltas, props)
    torch.testing.assert_close(back, gt, atol=1e-3, rtol=1e-4)
    # a proposal equal to its box encodes to zero
    torch.testing.assert_close(coder.encode_single(props, props), torch.zeros(50, 4), atol=1e-5, rtol=0)


def test_voc_and_continuous_boxes_give_the_devkit_iou():
    a, b = (1, 1, 10, 10), (6, 1, 15, 10)  # inclusive: 10 x 10 each, 5 x 10 overlap
    assert iou_inclusive(a, b) == pytest.approx(50 / 150)
    ca, cb = proposals.to_continuous(np.array([a, b]))
    assert box_iou(ca[None], cb[None]).item() == pytest.approx(50 / 150)
    torch.testing.assert_close(proposals.to_voc(proposals.to_continuous(np.array([a]))),
                               torch.tensor([a], dtype=torch.float32))


def test_roi_sampler_labels_by_iou_and_keeps_a_quarter_foreground():
    gt = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    # IoUs with gt: 1.0, 0.81, 0.5 (fg); 0.45, 0.1 (bg); 0.05 (ignored); 0 (ignored)
    boxes = torch.tensor([[0, 0, 100, 100], [0, 0, 90, 90], [0, 0, 50, 100],
                          [0, 0, 45, 100], [0, 0, 10, 100], [0, 0, 5, 100], [200, 200, 300, 300]],
                         dtype=torch.float32)
    sampler = RoiSampler(rois_per_image=64, fg_fraction=0.25)
    labels, matched = sampler.labels_for(boxes, gt, torch.tensor([7]))
    assert labels.tolist() == [7, 7, 7, 0, 0, -1, -1]
    assert (matched == gt).all()

    many = torch.cat([boxes[:3].repeat(20, 1), boxes[3:5].repeat(40, 1)])  # 60 fg, 80 bg
    torch.manual_seed(0)
    sample = RoiSampler(rois_per_image=32, fg_fraction=0.25)(many, gt, torch.tensor([3]))
    assert len(sample.boxes) == 32
    assert (sample.labels > 0).sum().item() == 8 and (sample.labels == 0).sum().item() == 24
    fg = sample.labels > 0
    decoded = box_coder().decode_single(sample.targets[fg], sample.boxes[fg])
    torch.testing.assert_close(decoded, gt.expand_as(decoded), atol=1e-3, rtol=1e-4)


def test_sampler_without_ground_truth_ignores_everything():
    labels, _ = RoiSampler().labels_for(torch.tensor([[0.0, 0, 10, 10]]), torch.zeros(0, 4),
                                        torch.zeros(0, dtype=torch.int64))
    assert labels.tolist() == [-1]


def test_loss_uses_the_true_class_deltas_of_foreground_rois_only():
    logits = torch.zeros(3, 3)
    deltas = torch.zeros(3, 12)
    deltas[0, 4:8] = 1.0  # class 1 of roi 0: off by 1 in every coordinate
    deltas[2, :] = 100.0  # a background roi's deltas never count
    labels = torch.tensor([1, 2, 0])
    targets = torch.zeros(3, 4)
    cls_loss, box_loss = fast_rcnn_loss(logits, deltas, labels, targets)
    assert cls_loss.item() == pytest.approx(np.log(3))
    assert box_loss.item() == pytest.approx(4 * 0.5 / 3)  # smooth-L1(1) = 0.5, 4 coords, / 3 rois


def test_detect_applies_class_wise_nms_at_0_3():
    props = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 13], [0, 0, 10, 10]], dtype=torch.float32)
    logits = torch.full((3, 3), -10.0)
    logits[0, 1] = 5  # class 1, best
    logits[1, 1] = 4  # class 1 again, IoU 10/13 = 0.77 > 0.3 with the first: suppressed
    logits[2, 2] = 5  # class 2 on the same box: kept
    boxes, scores, labels = detect(logits, torch.zeros(3, 12), props, (50, 50), box_coder())
    assert sorted(labels.tolist()) == [1, 2]
    assert len(boxes) == 2


def test_conv5_stride_of_the_backbones():
    assert conv5_stride(build("alexnet")) == 16
    assert conv5_stride(build("alexnet-small")) == 8


def test_fast_rcnn_frozen_conv_protocol_keeps_conv_weights():
    rep = Representation(build("alexnet-small"), "alexnet-small")
    model = FastRCNN(rep, 20, frozen_conv=True)
    before = model.trunk.conv3.conv.weight.clone()
    images = model.input.normalise(torch.rand(1, 3, 96, 96))
    rois = torch.tensor([[0, 4.0, 4, 60, 60], [0, 30, 30, 90, 90]])
    cls_logits, deltas = model(images, rois)
    assert cls_logits.shape == (2, 21) and deltas.shape == (2, 84)
    (cls_logits.sum() + deltas.sum()).backward()
    assert model.trunk.conv3.conv.weight.grad is None
    assert model.trunk.fc6.fc.weight.grad is not None
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    assert torch.equal(model.trunk.conv3.conv.weight, before)


def test_image_scale_follows_fast_rcnn():
    assert detection.image_scale(375, 500, 600, 1000) == pytest.approx(1.6)
    assert detection.image_scale(100, 500, 600, 1000) == pytest.approx(2.0)  # long side capped


# --- proposals ------------------------------------------------------------------------------

def test_selective_search_boxes_are_inside_the_image():
    rng = np.random.default_rng(0)
    image = np.zeros((60, 80, 3), dtype=np.uint8)
    image[10:40, 20:60] = (200, 30, 30)
    image += rng.integers(0, 20, image.shape, dtype=np.uint8)
    boxes = proposals.selective_search(image)
    assert len(boxes) > 0 and boxes.dtype == np.float32
    assert (boxes[:, 0] >= 1).all() and (boxes[:, 1] >= 1).all()
    assert (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 60).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and len(np.unique(boxes, axis=0)) == len(boxes)


def test_selective_search_is_cached_and_reused(tiny_world, tmp_path, monkeypatch):
    devkit = VOCDevkit(locate_devkit(tiny_world))
    ids = devkit.read_split("2007", "test")[:4]
    args = (ids, lambda i: devkit.image_path("2007", i), "voc2007_test", tmp_path, {"devkit": "x"})
    first, cached = proposals.split_proposals(*args)
    assert not cached and len(first) == 4
    [cache_file] = tmp_path.rglob("voc2007_test.npz")

    def fail(*_a, **_k):
        raise AssertionError("selective search ran again instead of reading the cache")

    monkeypatch.setattr(proposals, "compute_selective_search", fail)
    again, cached = proposals.split_proposals(*args)
    assert cached
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    # the cache file is itself a valid user proposals file
    user, _ = proposals.split_proposals(ids, None, "voc2007_test", tmp_path / "other", {},
                                        source=str(cache_file))
    np.testing.assert_array_equal(user[0], first[0])
    # a torn cache file is computed again, not trusted
    cache_file.write_bytes(b"garbage")
    monkeypatch.undo()
    redone, cached = proposals.split_proposals(*args)
    assert not cached
    np.testing.assert_array_equal(redone[1], first[1])


def test_the_world_ships_its_proposals_and_an_older_world_gets_them(tiny_world, tmp_path):
    import shutil

    from benchharness.data.synthetic import proposals as synth_proposals

    devkit = VOCDevkit(locate_devkit(tiny_world))
    for split in synth_proposals.SPLITS:
        shipped = proposals.load_npz(synth_proposals.proposal_file(tiny_world, split))
        assert sorted(shipped) == sorted(devkit.read_split("2007", split))
    image_id = devkit.read_split("2007", "test")[0]
    image = cv2.imread(str(devkit.image_path("2007", image_id)))
    np.testing.assert_array_equal(shipped[image_id], proposals.selective_search(image, "fast"))
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    shutil.rmtree(world / synth_proposals.FOLDER)
    assert synth_proposals.ensure_proposals(world) is True
    again = proposals.load_npz(synth_proposals.proposal_file(world, "test"))
    np.testing.assert_array_equal(again[image_id], shipped[image_id])
    assert synth_proposals.ensure_proposals(world) is False  # nothing left to compute
    (world / ".complete").unlink()
    shutil.rmtree(world / synth_proposals.FOLDER)
    assert synth_proposals.ensure_proposals(world) is False  # an unfinished world is left alone
    assert not (world / synth_proposals.FOLDER).exists()


def test_fast_rcnn_mat_files_are_read_in_voc_order(tmp_path):
    boxes = np.empty(2, dtype=object)
    boxes[0] = np.array([[2, 1, 20, 10], [5, 5, 6, 7]], dtype=np.float64)  # (y1, x1, y2, x2)
    boxes[1] = np.array([[1, 1, 3, 4]], dtype=np.float64)
    images = np.empty(2, dtype=object)
    images[:] = ["000001", "000002"]
    path = tmp_path / "voc_2007_test.mat"
    scipy.io.savemat(path, {"boxes": boxes, "images": images})
    found = proposals.load_proposals_file(path)
    np.testing.assert_array_equal(found["000001"], [[1, 2, 10, 20], [5, 5, 7, 6]])
    np.testing.assert_array_equal(found["000002"], [[1, 1, 4, 3]])
    with pytest.raises(DataError, match="no proposals for 1 images"):
        proposals.split_proposals(["000001", "000009"], None, "voc_2007_test", tmp_path, {},
                                  source=str(path))


def test_bad_proposal_files_are_named(tmp_path):
    with pytest.raises(DataError, match="must be a .mat"):
        proposals.load_proposals_file(tmp_path / "boxes.txt")
    bad = tmp_path / "boxes.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"boxes\.npz: not a readable \.npz"):
        proposals.load_proposals_file(bad)
    with pytest.raises(DataError, match="none of voc2007_test.mat, voc2007_test.npz in this folder"):
        proposals.split_proposals(["1"], None, "voc2007_test", tmp_path, {}, source=str(tmp_path))
    mat = tmp_path / "other.mat"
    scipy.io.savemat(mat, {"x": np.zeros(2)})
    with pytest.raises(DataError, match="expected variables 'boxes' and 'images'"):
        proposals.load_proposals_file(mat)


# --- the task -------------------------------------------------------------------------------

def test_detection_transfer_on_the_tiny_world(tiny_world, tmp_path):
    rep = Representation(build("alexnet-small"), "alexnet-small")
    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path, "alexnet-small",
                     config={"epochs": 1, "scale": 96, "max_size": 160, "rois_per_image": 16})
    out = detection.transfer(rep, "fc6-8", ctx)
    assert out.metric == "voc07-11pt" and out.extra_metrics == ("coco-ap50",)
    assert out.info["frozen"] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert out.info["split"] == "test" and out.info["year"] == "2007"
    assert set(out.predictions.detections) == set(out.ground_truth.class_names)
    sizes = {}
    devkit = VOCDevkit(locate_devkit(tiny_world))
    for name in out.predictions.class_names:
        for image_id, score, x1, y1, x2, y2 in out.predictions.detection_tuples(name):
            h, w = sizes.setdefault(image_id, devkit.load_image("2007", image_id).shape[-2:])
            assert 0 <= score <= 1 and 1 <= x1 <= x2 <= w and 1 <= y1 <= y2 <= h
    assert out.info["proposals_from_cache"] is False
    again = detection.transfer(rep, "fc6-8", ctx)  # same seed, cached proposals: same output
    assert again.info["proposals_from_cache"] is True
    for name in out.predictions.class_names:
        assert again.predictions.detection_tuples(name) == out.predictions.detection_tuples(name)
    # the world's precomputed proposals (a folder named relative to the data root) are the same
    # boxes: the same detections, and no selective search in this results directory
    shipped = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path / "elsewhere", "alexnet-small",
                         config={**ctx.config, "proposals": "selective_search_data"})
    from_world = detection.transfer(rep, "fc6-8", shipped)
    assert from_world.info["proposals"] == {"trainval": "selective_search_data",
                                            "test": "selective_search_data"}
    assert not (tmp_path / "elsewhere" / "proposals").exists()
    for name in out.predictions.class_names:
        assert from_world.predictions.detection_tuples(name) == out.predictions.detection_tuples(name)
    with pytest.raises(ValueError, match="unknown settings"):
        detection.transfer(rep, "all", RunContext(torch.device("cpu"), 0, tiny_world, tmp_path,
                                                  "alexnet-small", config={"epoch": 1}))


def test_a_truncated_mat_file_is_named(tmp_path):
    bad = tmp_path / "voc_2007_test.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file")
    with pytest.raises(DataError, match=r"voc_2007_test\.mat: not a readable \.mat file"):
        proposals.load_proposals_file(bad)


# --- reference protocol: Fast R-CNN's file names, multi-scale, iterations ----------------------

def _fast_rcnn_mat(path, cells, images=None):
    """A .mat as Fast R-CNN's selective_search_data holds it: a cell array of (y1, x1, y2, x2)."""
    boxes = np.empty(len(cells), dtype=object)
    for k, c in enumerate(cells):
        boxes[k] = np.asarray(c, dtype=np.float64).reshape(-1, 4)
    data = {"boxes": boxes}
    if images is not None:
        names = np.empty(len(images), dtype=object)
        names[:] = images
        data["images"] = names
    scipy.io.savemat(path, data)


def test_fast_rcnn_selective_search_data_folder_is_read_by_its_own_names(tmp_path):
    # Fast R-CNN's loader takes cell i for the split's i-th id and reorders (1, 0, 3, 2); a
    # file without 'images' is read the same way
    folder = tmp_path / "selective_search_data"
    folder.mkdir()
    _fast_rcnn_mat(folder / "voc_2007_trainval.mat", [[[3, 2, 30, 20]], [[1, 1, 5, 9], [2, 4, 6, 8]]])
    boxes, cached = proposals.split_proposals(["000005", "000007"], None, "voc2007_trainval",
                                              tmp_path, {}, source=str(folder),
                                              file_names=["voc_2007_trainval"])
    assert cached
    np.testing.assert_array_equal(boxes[0], [[2, 3, 20, 30]])
    np.testing.assert_array_equal(boxes[1], [[1, 1, 9, 5], [4, 2, 8, 6]])
    # VOC 1-based (2, 3, 20, 30) is Fast R-CNN's 0-based (1, 2, 19, 29): width 19, height 28
    c = proposals.to_continuous(boxes[0])
    assert (c[0, 2] - c[0, 0]).item() == 19 and (c[0, 3] - c[0, 1]).item() == 28


def test_a_mat_file_with_the_wrong_number_of_cells_is_named(tmp_path):
    path = tmp_path / "voc_2007_test.mat"
    _fast_rcnn_mat(path, [[[1, 1, 4, 4]], [[1, 1, 4, 4]]])
    with pytest.raises(DataError, match=r"voc_2007_test\.mat: 2 box arrays for the 3 images of the split"):
        proposals.split_proposals(["1", "2", "3"], None, "voc2007_test", tmp_path, {}, source=str(path))
    _fast_rcnn_mat(path, [[[1, 1, 4, 4]]], images=["1", "2"])
    with pytest.raises(DataError, match=r"voc_2007_test\.mat: 1 box arrays for 2 images"):
        proposals.load_proposals_file(path)


def test_a_path_per_split_overrides_the_common_proposals():
    cfg = detection.DetConfig.from_mapping({"proposals": "/a", "proposals_test": "/t.mat"}, "all")
    assert cfg.proposals_for("test") == "/t.mat" and cfg.proposals_for("trainval") == "/a"


def test_pyramid_level_is_the_scale_closest_to_224_squared():
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0],   # area 1e4
                          [0.0, 0.0, 300.0, 200.0],   # area 6e4
                          [10.0, 10.0, 20.0, 30.0]])  # area 200
    factors = [0.8, 1.6, 2.4]
    # by hand: |area * f^2 - 50176| for each factor
    # 1e4: 6400, 25600, 57600 -> |.-50176| = 43776, 24576, 7424 -> level 2
    # 6e4: 38400, 153600, 345600 -> 11776, 103424, 295424 -> level 0
    # 200: 128, 512, 1152 -> the largest factor -> level 2
    assert detection.pyramid_levels(boxes, factors).tolist() == [2, 0, 2]


def test_multi_scale_training_picks_scales_from_the_list(monkeypatch):
    data = detection.DetSplit(
        ["a", "b"], [torch.zeros(3, 100, 200, dtype=torch.uint8)] * 2, [(100, 200)] * 2,
        [torch.tensor([[0.0, 0.0, 50.0, 50.0]])] * 2, [torch.tensor([[0.0, 0.0, 50.0, 50.0]])] * 2,
        [torch.tensor([1])] * 2)
    seen = []

    def fake_batch(images, convention, device, sizes):
        seen.extend(sizes)
        return torch.zeros(len(images), 3, 8, 8)

    monkeypatch.setattr(detection, "normalised_batch", fake_batch)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.input = None

        def forward(self, x, rois):
            return self.w.expand(len(rois), 21) * 1.0, self.w.expand(len(rois), 84) * 1.0

        def param_groups(self, representation, lr, lr_pretrained, *caffe_multipliers):
            return [{"params": [self.w], "lr": lr}]

    cfg = detection.DetConfig(scales=(50, 75, 100), max_size=1000, iterations=30, images_per_batch=1,
                              rois_per_image=4)
    ctx = RunContext(torch.device("cpu"), 0, None, None, "x", config={})
    detection.train(Net(), None, data, cfg, ctx)
    assert len(seen) == 30
    assert {h for h, _ in seen} == {50, 75, 100}  # short side 100 -> each scale, width doubled
    assert all(w == 2 * h for h, w in seen)
    cfg = detection.DetConfig(scales=(50, 75, 100), max_size=120, iterations=4, images_per_batch=1)
    seen.clear()
    detection.train(Net(), None, data, cfg, ctx)
    assert all(w <= 120 for _, w in seen)


def test_caffe_step_schedule_divides_every_stepsize_iterations():
    from benchharness.tasks.settings import step_schedule

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = step_schedule(opt, 10, lr_steps=1, step_at=0.8, stepsize=4)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01])  # 1 * 0.1^floor(it/4)


def test_multi_scale_detection_on_the_tiny_world(tiny_world, tmp_path):
    rep = Representation(build("alexnet-small"), "alexnet-small")
    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path, "alexnet-small",
                     config={"iterations": 3, "scales": [64, 96], "test_scales": [64, 96, 128],
                             "max_size": 200, "rois_per_image": 16, "stepsize": 2,
                             "bbox_normalization": "data"})
    out = detection.transfer(rep, "all", ctx)
    assert out.info["iterations"] == 3 and out.info["test_scales"] == [64, 96, 128]
    assert out.info["bbox_normalization"] == "data"
    assert out.info["detections"] > 0


def test_conv5_stride_with_caffe_pools_and_lrn():
    """Caffe's rounded-up pools and CaffeNet's LRN leave Fast R-CNN's spatial scale at 1/16."""
    trunk = build("alexnet")
    trunk.conv1.conv.padding = (0, 0)  # CaffeNet's conv1 (torchvision's pads 2)
    for name in ("conv1", "conv2", "conv5"):
        trunk.stage(name).pool.ceil_mode = True
    for name in ("conv1", "conv2"):
        trunk.stage(name).add_module("norm", torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0))
    model = FastRCNN(Representation(trunk, "alexnet"), 20)
    assert model.spatial_scale == 1 / 16
    # a 227 x 227 input gives Caffe's 13 x 13 conv5 (conv1 55 -> pool1 27 -> pool2 13)
    assert model.conv5(torch.zeros(1, 3, 227, 227)).shape[-2:] == (13, 13)


def test_regression_stats_follow_fast_rcnn_by_hand():
    from benchharness.tasks.fast_rcnn import regression_stats

    gt = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    rois = torch.tensor([[0.0, 0.0, 100.0, 100.0],    # the box itself: IoU 1, targets 0
                         [10.0, 0.0, 110.0, 100.0],   # IoU 90/110: dx = -10/100
                         [0.0, 0.0, 80.0, 100.0],     # IoU 0.8: dx = 10/80, dw = log(100/80)
                         [60.0, 60.0, 160.0, 160.0]])  # IoU < 0.5: left out
    coder = box_coder()
    mean, std = regression_stats([rois], [gt], [torch.tensor([3])], 20, coder)
    w = np.array([10, 10, 5, 5])
    raw = np.array([[0, 0, 0, 0], [-0.1, 0, 0, 0], [0.125, 0, np.log(100 / 80), 0]]) * w
    np.testing.assert_allclose(mean[3].numpy(), raw.mean(0), atol=1e-5)
    expected_std = raw.std(0)
    expected_std[expected_std == 0] = 1
    np.testing.assert_allclose(std[3].numpy(), expected_std, atol=1e-5)
    assert (mean[[0, 1, 20]] == 0).all() and (std[[0, 1, 20]] == 1).all()  # no RoIs: identity
    # with flipped copies dx averages to zero and keeps its spread
    mean_f, std_f = regression_stats([rois], [gt], [torch.tensor([3])], 20, coder, flip=True)
    assert mean_f[3, 0].item() == pytest.approx(0, abs=1e-6)
    assert std_f[3, 0].item() == pytest.approx(np.sqrt((raw[:, 0] ** 2).mean()), rel=1e-5)
    np.testing.assert_allclose(mean_f[3, 1:].numpy(), mean[3, 1:].numpy(), atol=1e-6)


def test_detect_unnormalises_with_the_target_stats():
    coder = box_coder()
    props = torch.tensor([[10.0, 10.0, 50.0, 60.0]])
    gt = torch.tensor([[12.0, 8.0, 55.0, 58.0]])
    mean, std = torch.zeros(3, 4), torch.ones(3, 4)
    mean[1], std[1] = torch.tensor([0.5, -0.2, 0.1, 0.3]), torch.tensor([2.0, 1.5, 0.5, 0.8])
    normalised = (coder.encode_single(gt, props) - mean[1]) / std[1]
    deltas = torch.zeros(1, 12)
    deltas[0, 4:8] = normalised[0]
    logits = torch.tensor([[0.0, 5.0, 0.0]])
    boxes, _, labels = detect(logits, deltas, props, (100, 100), coder, target_stats=(mean, std))
    assert labels[0] == 1
    torch.testing.assert_close(boxes[0], gt[0], atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="bbox_normalization must be"):
        detection.DetConfig.from_mapping({"bbox_normalization": "per-class"}, "all")


def test_param_groups_give_biases_caffe_multipliers():
    rep = Representation(build("alexnet-small"), "alexnet-small", learned_stages=("conv1", "conv2"))
    model = FastRCNN(rep, 20)
    groups = model.param_groups(rep, 0.01, 0.001, bias_lr_mult=2.0, head_bias_decay=False)
    where = {id(p): g for g in groups for p in g["params"]}
    conv1, conv3 = model.trunk.conv1.conv, model.trunk.conv3.conv
    assert where[id(conv1.weight)]["lr"] == 0.001 and where[id(conv1.bias)]["lr"] == 0.002
    assert where[id(conv3.weight)]["lr"] == 0.01 and where[id(conv3.bias)]["lr"] == pytest.approx(0.02)
    for head in (model.cls_score, model.bbox_pred):
        bias = where[id(head.bias)]
        assert bias["weight_decay"] == 0.0 and bias["lr"] == pytest.approx(0.02)
        assert "weight_decay" not in where[id(head.weight)]
    assert "weight_decay" not in where[id(conv3.bias)]  # the trunk's biases decay (decay_mult 1)
    assert len(where) == sum(p.requires_grad for p in model.parameters())
