"""The PASCAL VOC class list, its segmentation colour map and the ignore label."""

from __future__ import annotations

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""The 20 VOC object classes in the devkit's order; segmentation index = position + 1."""

IGNORE_LABEL = 255
"""Mask value of the 'void' band along object borders (and of unlabelled pixels)."""


def _voc_palette() -> list[int]:
    """The VOC colour map: the bits of the index are spread over R, G, B, high bit first.

    Bit 0 of the index goes to R, bit 1 to G, bit 2 to B, starting at the most significant
    bit of each channel; the next three bits go one position lower, and so on.
    """
    palette: list[int] = []
    for index in range(256):
        red = green = blue = 0
        code = index
        shift = 7
        while code:
            red |= (code & 1) << shift
            green |= ((code >> 1) & 1) << shift
            blue |= ((code >> 2) & 1) << shift
            code >>= 3
            shift -= 1
        palette.extend((red, green, blue))
    return palette


VOC_PALETTE: list[int] = _voc_palette()
"""Flat ``[r0, g0, b0, r1, ...]`` list of 768 ints, for ``PIL.Image.putpalette``."""
