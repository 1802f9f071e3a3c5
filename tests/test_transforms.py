"""Batched crops: the threaded CPU path gives each image's own roi_align crop."""

from __future__ import annotations

import torch
from torchvision.ops import roi_align

from benchharness.data.loading.transforms import crop_batch, random_boxes


def test_crop_batch_equals_one_roi_align_per_image_whatever_the_thread_count():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (37, 3, 40, 40), dtype=torch.uint8, generator=gen)
    boxes = random_boxes(37, 40, (0.25, 1.0), (3 / 4, 4 / 3), gen)
    expected = torch.cat([
        roi_align(images[i:i + 1].float() / 255, [boxes[i:i + 1]], output_size=(16, 16),
                  spatial_scale=1.0, sampling_ratio=2, aligned=True)
        for i in range(37)]).clamp(0, 1)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            torch.testing.assert_close(crop_batch(images, boxes, 16), expected, rtol=0, atol=1e-6)
    finally:
        torch.set_num_threads(before)
