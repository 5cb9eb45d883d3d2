"""Odd but valid images load; bad files fail with one clear ImageError naming the file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_foct.runtime.errors import ImageError
from edge_foct.runtime.image_io import list_images, read_image, to_rgb8


@pytest.mark.parametrize("make", [
    lambda r: (r.integers(0, 65535, (40, 50)).astype(np.uint16)),  # 16-bit grey
    lambda r: (r.integers(0, 65535, (40, 50, 3)).astype(np.uint16)),  # 16-bit colour
    lambda r: r.integers(0, 255, (40, 50)).astype(np.uint8),  # grey
    lambda r: r.integers(0, 255, (40, 50, 4)).astype(np.uint8),  # BGRA
])
def test_odd_images_load_as_rgb8(tmp_path, make, rng):
    img = make(rng)
    cv2.imwrite(str(tmp_path / "x.png"), img)
    out = read_image(tmp_path / "x.png")
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8


def test_16bit_is_scaled_not_truncated(tmp_path):
    img = np.full((16, 16), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / "w.png"), img)
    assert read_image(tmp_path / "w.png").min() == 255


def test_channel_order_is_rgb(tmp_path):
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    cv2.imwrite(str(tmp_path / "b.png"), bgr)
    assert read_image(tmp_path / "b.png")[0, 0].tolist() == [0, 0, 255]


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\nnot really", b"hello"])
def test_corrupt_files_raise_image_error(tmp_path, content):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageError, match="bad.png"):
        read_image(p)


def test_missing_and_tiny(tmp_path):
    with pytest.raises(ImageError, match="cannot read|no such"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="at least 8x8"):
        to_rgb8(np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageError, match="no such"):
        list_images([tmp_path / "nope"])
