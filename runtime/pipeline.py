"""The per-frame pipeline, readable in one screen:

    frame (H, W, 3) uint8 RGB -> preprocess -> backbone -> method -> anomaly map -> Inspection
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .anomaly_map import anomaly_map, image_score
from .backbone import Backbone
from .methods import Method
from .preprocess import Preprocessor
from .threshold import finite_threshold, is_defective


@dataclass
class Inspection:
    """One frame's result. anomaly_map and crop are at the network's input size (crop, crop)."""

    score: float
    defective: bool
    threshold: float
    patch_scores: np.ndarray  # (h, w) float32
    anomaly_map: np.ndarray  # (crop, crop) float32
    crop: np.ndarray  # (crop, crop, 3) uint8 RGB: the pixels the network saw
    timings_ms: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)


class Inspector:
    """Backbone + method + threshold. ``inspect`` is the whole per-frame path."""

    def __init__(self, backbone: Backbone, pre: Preprocessor, method: Method, threshold: float,
                 online: bool = True) -> None:
        self.backbone, self.pre, self.method = backbone, pre, method
        self.threshold = finite_threshold(threshold)
        self.online = online
        method.set_gate(self.threshold)

    def inspect(self, rgb: np.ndarray) -> Inspection:
        t0 = time.perf_counter()
        crop = self.pre.crop_rgb(rgb)  # (crop, crop, 3)
        x = self.pre.normalise(crop)  # (1, 3, crop, crop)
        t1 = time.perf_counter()
        # the engine's buffer (no 4 MB copy at WRN-50-2 / 256 px): the method is done with it before the
        # next frame, and keeps copies of what it stores (fancy-indexed rows into its memory)
        feats = self.backbone.features(x, copy=False)[0]  # (h, w, D)
        h, w, d = feats.shape
        t2 = time.perf_counter()
        result = self.method.score(feats.reshape(h * w, d), update=self.online)  # scores (Q,)
        t3 = time.perf_counter()
        patch = result.scores.reshape(h, w)
        amap = anomaly_map(patch, crop.shape[:2])  # (crop, crop)
        score = image_score(patch)
        t4 = time.perf_counter()
        ms = lambda a, b: round((b - a) * 1e3, 3)  # noqa: E731
        timings = {"preprocess": ms(t0, t1), "backbone": ms(t1, t2), "method": ms(t2, t3),
                   "map": ms(t3, t4), "total": ms(t0, t4)}
        return Inspection(score, is_defective(score, self.threshold), self.threshold, patch, amap, crop,
                          timings, result.diagnostics)

    def warm_up(self) -> float:
        """One mid-grey frame through every stage, learning nothing: the engines' first-run
        allocations (and a GPU backend's kernel compilation) happen here, not on the first real
        frame. -> milliseconds it took."""
        t0 = time.perf_counter()
        grey = np.full((self.pre.resize, self.pre.resize, 3), 128, np.uint8)
        feats = self.backbone.features(self.pre.normalise(self.pre.crop_rgb(grey)))[0]  # (h, w, D)
        h, w, d = feats.shape
        patch = self.method.score(feats.reshape(h * w, d), update=False).scores.reshape(h, w)
        anomaly_map(patch, self.pre.crop_hw)
        return (time.perf_counter() - t0) * 1e3
