"""Patch scores -> anomaly map (bilinear upsample + Gaussian blur) and image score."""

from __future__ import annotations

import cv2
import numpy as np

BLUR_SIGMA = 4.0


def anomaly_map(patch_scores: np.ndarray, size: tuple[int, int], sigma: float = BLUR_SIGMA) -> np.ndarray:
    """patch_scores (h, w) -> (H, W) float32 map; size = (H, W).

    Bilinear with half-pixel centres (torch align_corners=False), then a Gaussian of ``sigma``
    truncated at 4 sigma, as scipy.ndimage.gaussian_filter in PatchCore and FOCT.
    """
    up = cv2.resize(patch_scores.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    if sigma <= 0:
        return up
    k = 2 * int(4.0 * sigma + 0.5) + 1
    return cv2.GaussianBlur(up, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def image_score(patch_scores: np.ndarray) -> float:
    """Image score = max patch score (both seeds)."""
    return float(np.max(patch_scores))
