"""Preprocessing: resize, centre crop, RGB -> ImageNet-normalised NCHW float32."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .names import IMAGENET_MEAN, IMAGENET_STD

_SCALE = (1.0 / (255.0 * np.asarray(IMAGENET_STD, np.float64))).astype(np.float32)  # (3,) per RGB channel
_OFFSET = (-np.asarray(IMAGENET_MEAN, np.float64) / np.asarray(IMAGENET_STD, np.float64)).astype(np.float32)


def round16(x: float) -> int:
    """Nearest multiple of 16, at least 16."""
    return max(16, int(round(x / 16)) * 16)


def image_aspect(images) -> float:
    """Median width / height of RGB images (H, W, 3), rounded to 2 decimals and kept in [1/4, 4]."""
    r = float(np.median([im.shape[1] / im.shape[0] for im in images]))
    return round(min(4.0, max(0.25, r)), 2)


@dataclass(frozen=True)
class Preprocessor:
    """The image is resized, then centre-cropped to the network input.

    aspect = 1 (default): resized to (resize, resize) and cropped to (crop, crop), a square, as
    PatchCore / FOCT do (the products are centred in the frame). aspect = width / height != 1 (a
    long or tall product, fit --keep-aspect): the short side of the input is ``crop`` and the long
    side ``crop * aspect`` rounded to a multiple of 16, so an elongated part is not squashed; the
    resize keeps the same resize / crop margin. ``crop`` must be a multiple of 16 so the stride-8
    and stride-16 grids line up.
    """

    resize: int = 256
    crop: int = 256
    aspect: float = 1.0
    stride: int = 8  # the backbone's input pixels per patch (BackboneInfo.feature_stride)

    def __post_init__(self) -> None:
        if self.crop % 16 or self.crop > self.resize or self.crop % self.stride:
            raise ValueError(f"crop={self.crop} must be a multiple of 16 and of the stride {self.stride}, "
                             f"and <= resize={self.resize}")
        if not 0.25 <= self.aspect <= 4.0:
            raise ValueError(f"aspect={self.aspect} must be within [0.25, 4]")

    @property
    def crop_hw(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        if self.aspect == 1.0:
            return self.crop, self.crop
        if self.aspect > 1.0:
            return self.crop, round16(self.crop * self.aspect)
        return round16(self.crop / self.aspect), self.crop

    @property
    def resize_hw(self) -> tuple[int, int]:
        """(height, width) the image is resized to before the centre crop."""
        if self.aspect == 1.0:
            return self.resize, self.resize
        h, w = self.crop_hw
        return int(round(h * self.resize / self.crop)), int(round(w * self.resize / self.crop))

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (h, w) of the features (stride ``stride``)."""
        h, w = self.crop_hw
        return h // self.stride, w // self.stride

    def _window(self) -> tuple[slice, slice]:
        (rh, rw), (ch, cw) = self.resize_hw, self.crop_hw
        oy, ox = (rh - ch) // 2, (rw - cw) // 2
        return slice(oy, oy + ch), slice(ox, ox + cw)

    def crop_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (crop_h, crop_w, 3) uint8: the pixels the network sees."""
        rh, rw = self.resize_hw
        img = cv2.resize(rgb, (rw, rh), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(img[self._window()])

    def crop_mask(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) bool -> (crop_h, crop_w) bool, nearest neighbour, aligned with ``crop_rgb``."""
        rh, rw = self.resize_hw
        m = cv2.resize(mask.astype(np.uint8), (rw, rh), interpolation=cv2.INTER_NEAREST)
        return m[self._window()].astype(bool)

    @staticmethod
    def normalise(crops: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) or (h, w, 3) uint8 RGB -> (N, 3, h, w) float32, ImageNet mean/std.

        One pass per channel, straight into the (N, 3, h, w) layout: x * (1 / (255 std)) - mean / std,
        equal to (x / 255 - mean) / std within 1e-6 (0.76 -> 0.12 ms at 256 x 256 on the dev CPU,
        where five whole-array passes and a transpose copy took a visible share of a 20 ms frame)."""
        x = np.asarray(crops)
        if x.ndim == 3:
            x = x[None]
        out = np.empty((x.shape[0], 3, *x.shape[1:3]), np.float32)
        for c in range(3):
            np.multiply(x[..., c], _SCALE[c], out=out[:, c])
            out[:, c] += _OFFSET[c]
        return out

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (1, 3, crop_h, crop_w) float32."""
        return self.normalise(self.crop_rgb(rgb))
