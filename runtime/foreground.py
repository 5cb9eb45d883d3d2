"""Foreground masks of support crops, for FOCT's foreground-aware memory (torch-free).

Both estimators are ``ForegroundFn`` (runtime/fit.py): ``(crop (H, W, 3) uint8 RGB) -> (mask (H, W)
bool, rule)``, where ``rule`` names what decided the mask and is logged per support image.

- ``ContrastForeground`` (no checkpoint): the colour distance of every pixel to the median colour of
  the frame's border ring (CIELab), split by Otsu. It is trusted only when the split region stands
  out from the border by more than the border varies by itself; textures and products that fill the
  frame do not, and become "all foreground".
- ``SamForeground``: the exported segment-anything encoder + fixed-prompt decoder graphs
  (export/segmenter.py), run through any ``Engine``.

Rule for near-empty / near-full masks (both estimators): below ``min_fraction`` (2 %) or above
``max_fraction`` (95 %) of the crop, the split is arbitrary (a speck, or a texture), so the whole
crop is foreground: splitting the memory there would only starve one of its two halves.
Measured on ../shared/data, train/good, crop 336 of 368 (tests/runtime/test_foreground.py asserts
it): metal_plate 32/32 "contrast-otsu", foreground 22-49 % of the crop (median 36 %), and 99.2 % of
the defect pixels of test/defective fall inside the masks; magnetic_tile 100/100 and glass 8/8
"full-frame:low-contrast". Only support images are masked: on defective glass the defect itself
stands out, so the estimator is not meant for query frames.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from . import names
from .engines import Engine, OrtEngine
from .errors import BackboneError

log = logging.getLogger(__name__)

RULE_CONTRAST = "contrast-otsu"  # the Otsu split of the border-contrast map was kept
RULE_LOW_CONTRAST = "full-frame:low-contrast"  # nothing stands out from the border: texture / filled frame
RULE_ALMOST_EMPTY = "full-frame:almost-empty"  # mask below min_fraction
RULE_ALMOST_FULL = "full-frame:almost-full"  # mask above max_fraction
RULE_SAM = "sam-{prompt}"  # the SAM mask was kept (prompt: box | centre)

SAM_ENCODER_FILE = "segmenter_encoder.onnx"
SAM_DECODER_FILE = "segmenter_decoder.onnx"
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # segment-anything's defaults, RGB 0-255
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


class ForegroundEstimator(Protocol):
    """``(crop (H, W, 3) uint8 RGB) -> (mask (H, W) bool, rule)``; ``name`` is logged once."""

    name: str

    def __call__(self, crop_rgb: np.ndarray) -> tuple[np.ndarray, str]: ...


@dataclass(frozen=True)
class FractionRule:
    """Masks covering less than ``min_fraction`` or more than ``max_fraction`` become all foreground."""

    min_fraction: float = 0.02
    max_fraction: float = 0.95

    def apply(self, mask: np.ndarray, kept: str) -> tuple[np.ndarray, str]:
        frac = float(mask.mean())
        if frac < self.min_fraction:
            return np.ones_like(mask, dtype=bool), RULE_ALMOST_EMPTY
        if frac > self.max_fraction:
            return np.ones_like(mask, dtype=bool), RULE_ALMOST_FULL
        return mask.astype(bool), kept


@dataclass(frozen=True)
class ContrastParams:
    work_size: int = 128  # the map is computed at this size (speed; the mask is upsampled back)
    border: float = 0.06  # width of the border ring that models the background, fraction of the side
    min_contrast: float = 2.5  # mean fg distance / (border's own p90 distance + 1 Lab unit)
    grow: int = 2  # dilation in work pixels: keeps the product's rim (edge defects) in the foreground
    fraction: FractionRule = FractionRule()


class ContrastForeground:
    """Classical, checkpoint-free estimator (module docstring); a few ms per crop on one core."""

    name = "contrast"

    def __init__(self, params: ContrastParams = ContrastParams()) -> None:
        self.params = params

    def contrast_map(self, crop_rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """(H, W, 3) uint8 -> (work, work) float32 Lab distance to the border median, border p90 distance."""
        p = self.params
        small = cv2.resize(crop_rgb, (p.work_size, p.work_size), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (5, 5), 0)  # sensor noise and fine texture are not "objects"
        lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)  # L 0-100, a/b +-127
        r = max(1, int(np.ceil(p.border * p.work_size)))
        ring = np.concatenate([lab[:r].reshape(-1, 3), lab[-r:].reshape(-1, 3),
                               lab[r:-r, :r].reshape(-1, 3), lab[r:-r, -r:].reshape(-1, 3)])
        med = np.median(ring, axis=0)  # robust to a product touching part of the border
        dist = np.linalg.norm(lab - med, axis=2)
        return dist.astype(np.float32), float(np.percentile(np.linalg.norm(ring - med, axis=1), 90))

    def __call__(self, crop_rgb: np.ndarray) -> tuple[np.ndarray, str]:
        p = self.params
        h, w = crop_rgb.shape[:2]
        dist, spread = self.contrast_map(crop_rgb)
        u8 = np.clip(dist * (255.0 / max(float(dist.max()), 1e-6)), 0, 255).astype(np.uint8)
        _, split = cv2.threshold(u8, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        k3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        split = cv2.morphologyEx(split, cv2.MORPH_OPEN, k3)  # drop thin wires and specks
        split = cv2.morphologyEx(split, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
        fg = split.astype(bool)
        if not fg.any() or float(dist[fg].mean()) < p.min_contrast * (spread + 1.0):
            return np.ones((h, w), bool), RULE_LOW_CONTRAST
        if p.grow:
            split = cv2.dilate(split, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * p.grow + 1,) * 2))
        mask = cv2.resize(split, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        return p.fraction.apply(mask, RULE_CONTRAST)


class SamForeground:
    """SAM encoder + fixed-prompt decoder engines (export/segmenter.py).

    The crop is resized to the encoder's S x S (a square crop keeps its aspect, exactly SAM's own
    resize-longest-side; a non-square one is stretched so the baked-in prompt still covers it),
    normalised with SAM's pixel mean/std, and the mask probability is resized back and cut at 0.5.
    """

    name = "sam"

    def __init__(self, encoder: Engine, decoder: Engine, fraction: FractionRule = FractionRule()) -> None:
        self.encoder, self.decoder, self.fraction = encoder, decoder, fraction
        self.size = int(encoder.inputs[0].shape[2])
        meta = encoder.metadata
        floats = lambda key, default: np.asarray(  # noqa: E731
            [float(v) for v in meta[key].split(",")] if key in meta else default, np.float32)
        self.mean = floats(names.META_PREFIX + "pixel_mean", SAM_PIXEL_MEAN)
        self.std = floats(names.META_PREFIX + "pixel_std", SAM_PIXEL_STD)
        self.rule = RULE_SAM.format(prompt=decoder.metadata.get(names.META_PREFIX + "prompt", "box"))

    @classmethod
    def load(cls, folder: str | os.PathLike, providers: list[str] | None = None,
             threads: int | None = None) -> "SamForeground":
        """The two ONNX graphs that ``edge-foct export --what segmenter`` wrote into ``folder``; a folder
        without them is one line naming the export command."""
        folder = Path(folder)
        missing = [f for f in (SAM_ENCODER_FILE, SAM_DECODER_FILE) if not (folder / f).is_file()]
        if missing:
            raise BackboneError(f"segmenter folder {folder}: no {' / '.join(missing)} there; write them with "
                                f"`edge-foct export --what segmenter --sam-checkpoint FILE --out {folder}`")
        return cls(OrtEngine(folder / SAM_ENCODER_FILE, providers, threads),
                   OrtEngine(folder / SAM_DECODER_FILE, providers, threads))

    def preprocess(self, crop_rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (1, 3, S, S) float32, SAM-normalised."""
        s = self.size
        # SAM resizes with PIL's bicubic; cubic when enlarging (the usual case: crops of 256-336 px)
        interp = cv2.INTER_CUBIC if s >= max(crop_rgb.shape[:2]) else cv2.INTER_AREA
        x = cv2.resize(crop_rgb, (s, s), interpolation=interp).astype(np.float32)
        return np.ascontiguousarray(((x - self.mean) / self.std).transpose(2, 0, 1)[None])

    def probability(self, crop_rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) float32 foreground probability."""
        emb = self.encoder.run({names.SEGMENTER_INPUT: self.preprocess(crop_rgb)})[names.SEGMENTER_EMBEDDINGS]
        prob = self.decoder.run({names.SEGMENTER_EMBEDDINGS: emb})[names.SEGMENTER_OUTPUT][0, 0]
        h, w = crop_rgb.shape[:2]
        return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)

    def __call__(self, crop_rgb: np.ndarray) -> tuple[np.ndarray, str]:
        return self.fraction.apply(self.probability(crop_rgb) > 0.5, self.rule)


def make_foreground(segmenter_dir: str | os.PathLike | None = None,
                    providers: list[str] | None = None) -> ForegroundEstimator:
    """SAM engines from ``segmenter_dir`` when given, else the classical estimator; logged once."""
    if segmenter_dir is None:
        log.info("foreground: classical contrast estimator (no SAM engine given)")
        return ContrastForeground()
    est = SamForeground.load(segmenter_dir, providers)
    log.info("foreground: SAM engines in %s (%s, %s)", segmenter_dir, est.rule, est.encoder.description)
    return est
