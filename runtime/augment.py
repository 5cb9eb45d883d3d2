"""Mild, camera-like jitter of a normal image: the views the threshold is learnt from."""

from __future__ import annotations

import cv2
import numpy as np


def jitter_transforms(h: int, w: int, n: int, seed: int = 0, shift: float = 0.02, angle: float = 2.0,
                      scale: float = 0.02, gain: float = 0.05) -> list[tuple[np.ndarray, float, float]]:
    """The n jitters ``jitter_views`` applies to an (h, w) image: (2, 3) affine matrix, gain, bias
    (0-255 units) each. Deterministic for a seed (the foreground judge warps masks with them)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = rng.uniform(-angle, angle)
        s = 1.0 + rng.uniform(-scale, scale)
        m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), a, s)
        m[:, 2] += rng.uniform(-shift, shift, 2) * (w, h)
        g = 1.0 + rng.uniform(-gain, gain)
        b = rng.uniform(-gain, gain) * 255.0
        out.append((m, g, b))
    return out


def jitter_views(rgb: np.ndarray, n: int, seed: int = 0, shift: float = 0.02, angle: float = 2.0,
                 scale: float = 0.02, gain: float = 0.05) -> list[np.ndarray]:
    """n views of rgb (H, W, 3) uint8: rotation +-angle deg, shift +-shift*size, zoom +-scale,
    brightness/contrast gain +-gain; border pixels replicated. Deterministic for a seed."""
    h, w = rgb.shape[:2]
    views = []
    for m, g, b in jitter_transforms(h, w, n, seed, shift, angle, scale, gain):
        v = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        views.append(np.clip(v.astype(np.float32) * g + b, 0, 255).astype(np.uint8))
    return views


#: the line views' jitter (issue 12, fourth pass): what a production line changes between parts that a
#: support photo does not show (pose, placement, zoom, light, focus). Fixed a priori, larger than the
#: threshold views' camera jitter above; not tuned on any category.
LINE_JITTER = {"shift": 0.04, "angle": 6.0, "scale": 0.04, "gain": 0.10}
LINE_BLUR = 1.0  # Gaussian blur sigma drawn in [0, LINE_BLUR] pixels (of the full image)
LINE_SEED = 1000  # line views of support image i use seed LINE_SEED + seed + i: other draws than its jitter views


def line_views(rgb: np.ndarray, n: int, seed: int = 0) -> list[np.ndarray]:
    """n "line views" of rgb (H, W, 3) uint8: ``jitter_views`` with ``LINE_JITTER`` (rotation +-6 deg,
    shift +-4 %, zoom +-4 %, brightness/contrast +-10 %), then a Gaussian blur of sigma in
    [0, LINE_BLUR] px (scaled to the image: sigma x max(H, W) / 256). Deterministic for a seed."""
    views = jitter_views(rgb, n, seed=seed, **LINE_JITTER)
    rng = np.random.default_rng([seed, 7])
    scale = max(rgb.shape[:2]) / 256.0
    out = []
    for v in views:
        s = float(rng.uniform(0.0, LINE_BLUR)) * scale
        out.append(cv2.GaussianBlur(v, (0, 0), s) if s > 0.05 else v)
    return out
