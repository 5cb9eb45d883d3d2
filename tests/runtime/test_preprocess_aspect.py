"""Preprocessor with an aspect (fit --keep-aspect): an elongated part is not squashed to a square."""

from __future__ import annotations

import numpy as np
import pytest

from edge_foct.runtime.preprocess import Preprocessor, image_aspect


def test_square_default_is_unchanged():
    pre = Preprocessor(288, 256)
    assert pre.crop_hw == (256, 256) and pre.resize_hw == (288, 288) and pre.grid == (32, 32)


@pytest.mark.parametrize("aspect,hw", [(2.46, (256, 624)), (0.5, (512, 256)), (1.33, (256, 336))])
def test_short_side_is_crop_and_long_side_a_multiple_of_16(aspect, hw):
    pre = Preprocessor(256, 256, aspect)
    assert pre.crop_hw == hw and pre.grid == (hw[0] // 8, hw[1] // 8)
    img = np.zeros((300, int(300 * aspect), 3), np.uint8)
    img[:, : img.shape[1] // 2] = 255  # left half white: the crop keeps the geometry, not a squash
    crop = pre.crop_rgb(img)
    assert crop.shape == (*hw, 3)
    assert abs(int(crop[:, : hw[1] // 2 - 4].min()) - 255) == 0 and int(crop[:, hw[1] // 2 + 4:].max()) == 0
    mask = pre.crop_mask(img[..., 0] > 0)
    assert mask.shape == hw and mask[:, : hw[1] // 2 - 4].all() and not mask[:, hw[1] // 2 + 4:].any()
    assert pre.normalise(crop).shape == (1, 3, *hw)


def test_resize_margin_follows_the_aspect():
    pre = Preprocessor(320, 256, 2.0)
    assert pre.crop_hw == (256, 512) and pre.resize_hw == (320, 640)


def test_image_aspect_is_the_median_and_bounded():
    imgs = [np.zeros((100, w, 3), np.uint8) for w in (240, 250, 900)]
    assert image_aspect(imgs) == 2.5
    assert image_aspect([np.zeros((10, 100, 3), np.uint8)]) == 4.0
    with pytest.raises(ValueError):
        Preprocessor(256, 256, 5.0)
