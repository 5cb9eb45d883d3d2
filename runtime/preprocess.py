"""Preprocessing: resize, centre crop, RGB -> ImageNet-normalised NCHW float32."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .names import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class Preprocessor:
    """resize: the image is resized to (resize, resize); crop: then centre-cropped to (crop, crop).

    Square resize, as PatchCore / FOCT do (the products are centred in the frame). ``crop`` must
    be a multiple of 16 so the stride-8 and stride-16 grids line up.
    """

    resize: int = 256
    crop: int = 256
    stride: int = 8  # the backbone's input pixels per patch (BackboneInfo.feature_stride)

    def __post_init__(self) -> None:
        if self.crop % 16 or self.crop > self.resize or self.crop % self.stride:
            raise ValueError(f"crop={self.crop} must be a multiple of 16 and of the stride {self.stride}, "
                             f"and <= resize={self.resize}")

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (h, w) of the features."""
        return self.crop // self.stride, self.crop // self.stride

    def _offset(self) -> int:
        return (self.resize - self.crop) // 2

    def crop_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (crop, crop, 3) uint8: the pixels the network sees."""
        img = cv2.resize(rgb, (self.resize, self.resize), interpolation=cv2.INTER_LINEAR)
        o = self._offset()
        return np.ascontiguousarray(img[o:o + self.crop, o:o + self.crop])

    def crop_mask(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) bool -> (crop, crop) bool, nearest neighbour, aligned with ``crop_rgb``."""
        m = cv2.resize(mask.astype(np.uint8), (self.resize, self.resize), interpolation=cv2.INTER_NEAREST)
        o = self._offset()
        return m[o:o + self.crop, o:o + self.crop].astype(bool)

    @staticmethod
    def normalise(crops: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) or (h, w, 3) uint8 RGB -> (N, 3, h, w) float32, ImageNet mean/std."""
        x = np.asarray(crops, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        x = (x * (1.0 / 255.0) - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (1, 3, crop, crop) float32."""
        return self.normalise(self.crop_rgb(rgb))
