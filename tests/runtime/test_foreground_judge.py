"""The foreground judge (runtime/foreground_judge.py): a wrong mask is recognised and not used,
a clean one is kept, on the one path fit_bank and eval share (runtime/fit.py support_foreground)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge_foct.runtime.augment import jitter_transforms, jitter_views
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.config import load_config
from edge_foct.runtime.fit import fit_bank, support_foreground
from edge_foct.runtime.foreground import RULE_CONTRAST, ContrastForeground
from edge_foct.runtime.foreground_judge import (RULE_FALLBACK, RULE_SPLIT, JudgeParams, agreement, decide,
                                                separation, stability)
from edge_foct.runtime.preprocess import Preprocessor

SIZE = 256


def highlight_on_filling_part(seed: int) -> np.ndarray:
    """A dark round part that fills the frame, with a small specular highlight (issue 13 item 3)."""
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE, 3), 150, np.uint8)
    cv2.circle(img, (SIZE // 2, SIZE // 2), int(SIZE * 0.75), (40, 40, 45), -1)
    c = (int(SIZE * 0.4) + int(rng.integers(-6, 7)), int(SIZE * 0.38) + int(rng.integers(-6, 7)))
    cv2.circle(img, c, int(SIZE * 0.09), (250, 250, 250), -1)
    img = cv2.GaussianBlur(img, (5, 5), 0)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def part_on_plain_background(seed: int) -> np.ndarray:
    """A light rectangular part on a dark plain background (about a quarter of the frame)."""
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE, 3), 30, np.uint8)
    cx, cy = SIZE // 2 + int(rng.integers(-8, 9)), SIZE // 2 + int(rng.integers(-8, 9))
    cv2.rectangle(img, (cx - 70, cy - 50), (cx + 70, cy + 50), (200, 180, 120), -1)
    img = cv2.GaussianBlur(img, (5, 5), 0)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def cell_features(crops: list[np.ndarray], cell: int = 8) -> np.ndarray:
    """K crops -> (K, Q, 6) non-negative patch features (a stand-in backbone): per cell the mean
    colour and its complement, so dark and light cells point different ways, as post-ReLU CNN
    features of different materials do."""
    out = []
    for c in crops:
        g = SIZE // cell
        m = c.astype(np.float32).reshape(g, cell, g, cell, 3).mean((1, 3)) / 255.0
        out.append(np.concatenate([m, 1.0 - m], -1).reshape(g * g, 6))
    return np.stack(out).astype(np.float32)


def test_highlight_blob_on_a_frame_filling_part_is_rejected():
    images = [highlight_on_filling_part(s) for s in range(2)]
    est = ContrastForeground()
    assert all(est(img)[1] == RULE_CONTRAST for img in images), "the estimator does keep the blob"
    pre = Preprocessor(SIZE, SIZE)
    masks, rules, decision = support_foreground(images, pre, est, cell_features(images))
    assert rules == [RULE_CONTRAST, RULE_CONTRAST]
    assert masks is None, decision.to_json()
    assert decision.rule == RULE_FALLBACK and not decision.use_split
    assert max(decision.readings["coverage"]) < 0.08


def test_clean_object_mask_is_accepted():
    images = [part_on_plain_background(s) for s in range(2)]
    pre = Preprocessor(SIZE, SIZE)
    masks, rules, decision = support_foreground(images, pre, ContrastForeground(), cell_features(images))
    assert decision.use_split and decision.rule == RULE_SPLIT, decision.to_json()
    assert masks is not None and masks.shape == (2, pre.grid[0] * pre.grid[1])
    r = decision.readings
    assert 0.15 < min(r["coverage"]) and max(r["coverage"]) < 0.4
    assert r["agreement"] > 0.8 and r["stability"] > 0.9


def test_fit_bank_falls_back_to_octs_memory_on_a_wrong_mask(random_backbone):
    """fit_bank (and so fit, demo, serve, eval): no background rows in the memory, decision in the manifest."""
    bb = Backbone.load(random_backbone)
    config = load_config(None).replace(method={"name": "foct", "preset": "edge"},
                                       input={"resize": SIZE, "crop": SIZE}, threshold={"value": 1.0})
    bad = fit_bank(bb, [highlight_on_filling_part(s) for s in range(2)], config)
    assert bad.manifest["foreground"]["rule"] == RULE_FALLBACK
    assert bad.arrays["memory_fg"].all(), "a rejected mask must not split the memory"
    good = fit_bank(bb, [part_on_plain_background(s) for s in range(2)], config)
    assert good.manifest["foreground"]["rule"] == RULE_SPLIT
    assert not good.arrays["memory_fg"].all() and good.arrays["memory_fg"].any()


def test_readings_on_known_masks():
    a = np.zeros((2, 16), bool)
    a[:, :8] = True
    assert agreement(a) == 1.0 and math.isnan(agreement(a[:1]))
    b = a.copy()
    b[1] = ~a[1]
    assert agreement(b) == 0.0
    # two well separated feature clusters: a mask equal to one cluster separates perfectly, a mask
    # cutting across both does not
    feats = np.zeros((1, 16, 2), np.float32)
    feats[0, :8] = (1.0, 0.0)
    feats[0, 8:] = (0.0, 1.0)
    assert separation(feats, a[:1]) == 1.0
    across = np.zeros((1, 16), bool)
    across[0, ::2] = True
    assert separation(feats, across) == 0.5
    p = JudgeParams(min_coverage=0.1, min_stability=0.7, min_separation=0.6)
    assert decide({"coverage": [0.3], "agreement": math.nan, "stability": 0.9, "separation": 0.8}, p)[0]
    assert not decide({"coverage": [0.3], "agreement": math.nan, "stability": 0.5, "separation": 0.8}, p)[0]
    assert not decide({"coverage": [0.3], "agreement": math.nan, "stability": 0.9, "separation": 0.55}, p)[0]


def test_stability_uses_the_threshold_views_jitter():
    """jitter_views applies exactly jitter_transforms: a mask warped with them matches the view."""
    img = part_on_plain_background(0)
    view = jitter_views(img, 1, seed=3)[0]
    (m, g, b), = jitter_transforms(SIZE, SIZE, 1, seed=3)
    warped = cv2.warpAffine(img, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(view, np.clip(warped.astype(np.float32) * g + b, 0, 255).astype(np.uint8))
    est = ContrastForeground()
    assert stability([img], [est(img)[0]], est, views=3) > 0.9
    # a mask that ignores the image (a fixed corner) does not follow the part: unstable
    corner = np.zeros((SIZE, SIZE), bool)
    corner[:40, :40] = True
    assert stability([img], [corner], est, views=3) < 0.1
