"""Detection and segmentation on the ``caffenet`` trunk (Caffe's ceil-mode pools, LRN, grouped
convolutions, fc -> relu -> dropout, BGR 0-255 input) run end to end on the tiny world."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchharness.backbones import build
from benchharness.interfaces import RunContext
from benchharness.representation import CAFFE_BGR, Representation
from benchharness.tasks import detection, segmentation


@pytest.fixture(scope="module")
def caffenet():
    torch.manual_seed(0)  # Caffe's fillers (std 0.01 / 0.005): made for 0-255 pixels
    return Representation(build("caffenet"), "caffenet", input=CAFFE_BGR)


@pytest.mark.slow
def test_multi_scale_fast_rcnn_on_caffenet(caffenet, tiny_world, tmp_path):
    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path, "caffenet",
                     config={"iterations": 2, "scales": [160, 227], "test_scales": [160, 227],
                             "max_size": 300, "rois_per_image": 8, "stepsize": 1})
    out = detection.transfer(caffenet, "all", ctx)
    assert np.isfinite(out.info["final_loss"]) and out.info["detections"] > 0
    assert out.info["test_scales"] == [160, 227]


@pytest.mark.slow
def test_fcn_on_caffenet(caffenet, tiny_world, tmp_path):
    ctx = RunContext(torch.device("cpu"), 0, tiny_world, tmp_path, "caffenet",
                     config={"iterations": 2, "batch_size": 1, "iter_size": 2, "lr": 1e-4,
                             "lr_steps": 0, "flip": False, "train_upsampling": False})
    out = segmentation.transfer(caffenet, "all", ctx)
    assert np.isfinite(out.info["final_loss"])
    for image_id in out.ground_truth.image_ids:
        assert out.predictions.masks[image_id].shape == out.ground_truth.mask(image_id).shape
