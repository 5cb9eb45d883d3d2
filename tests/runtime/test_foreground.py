"""Foreground estimators: the classical contrast estimator and its rules (synthetic and real data),
and the SAM engine wrapper equal to segment-anything's own pipeline on a tiny random SAM."""

from __future__ import annotations

import collections

import cv2
import numpy as np
import pytest

from edge_foct.runtime.foreground import (RULE_ALMOST_EMPTY, RULE_ALMOST_FULL, RULE_CONTRAST, RULE_LOW_CONTRAST,
                                          ContrastForeground, FractionRule, SamForeground, make_foreground)
from edge_foct.runtime.image_io import read_image, read_mask
from edge_foct.runtime.preprocess import Preprocessor

from ..conftest import DATA, need


def _scene(rng, radius: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A blue disc on a noisy light-grey background -> (rgb, true mask)."""
    img = np.clip(rng.normal(200, 6, (size, size, 3)), 0, 255).astype(np.uint8)
    truth = np.zeros((size, size), np.uint8)
    cv2.circle(truth, (size // 2 + 10, size // 2 - 5), radius, 1, -1)
    img[truth.astype(bool)] = (30, 60, 200)
    return img, truth.astype(bool)


def test_object_on_plain_background_is_segmented(rng):
    img, truth = _scene(rng, radius=70)
    mask, rule = ContrastForeground()(img)
    assert rule == RULE_CONTRAST and mask.shape == truth.shape and mask.dtype == bool
    assert mask[truth].all(), "the rim is grown into the foreground, never cut"
    # grown by ``grow`` work pixels (2 of 128 = 4 of 256): nothing beyond a slightly wider ring
    wide = cv2.dilate(truth.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (13, 13))).astype(bool)
    assert not mask[~wide].any()
    assert (mask & truth).sum() / (mask | truth).sum() > 0.85


def test_texture_is_all_foreground(rng):
    tex = cv2.GaussianBlur(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), (0, 0), 2)
    mask, rule = ContrastForeground()(tex)
    assert rule == RULE_LOW_CONTRAST and mask.all()
    flat = np.full((64, 80, 3), 120, np.uint8)
    mask, rule = ContrastForeground()(flat)
    assert rule == RULE_LOW_CONTRAST and mask.shape == (64, 80) and mask.all()


def test_speck_is_all_foreground(rng):
    img, _ = _scene(rng, radius=14)  # about 1 % of the crop
    mask, rule = ContrastForeground()(img)
    assert rule == RULE_ALMOST_EMPTY and mask.all()


def test_fraction_rule_boundaries():
    rule = FractionRule(min_fraction=0.02, max_fraction=0.95)
    m = np.zeros((10, 10), bool)
    m.flat[:2] = True  # exactly 2 %: kept
    kept, name = rule.apply(m, "kept")
    assert name == "kept" and (kept == m).all()
    m.flat[:1] = False  # 1 %
    assert rule.apply(m, "kept")[1] == RULE_ALMOST_EMPTY and rule.apply(m, "kept")[0].all()
    full = np.ones((10, 10), bool)
    full.flat[:4] = False  # 96 %
    assert rule.apply(full, "kept")[1] == RULE_ALMOST_FULL and rule.apply(full, "kept")[0].all()


@pytest.mark.shared_data
def test_rules_on_the_shared_categories():
    """metal_plate objects are segmented and hold the defects; magnetic_tile and glass are textures."""
    pre, est = Preprocessor(368, 336), ContrastForeground()
    expected = {"metal_plate": RULE_CONTRAST, "magnetic_tile": RULE_LOW_CONTRAST, "glass": RULE_LOW_CONTRAST}
    for category, rule in expected.items():
        need(DATA / category)
        files = sorted((DATA / category / "train" / "good").iterdir())
        results = [est(pre.crop_rgb(read_image(f))) for f in files]
        assert collections.Counter(r for _, r in results) == {rule: len(files)}, category
        if category == "metal_plate":
            fractions = [m.mean() for m, _ in results]
            assert 0.15 < min(fractions) and max(fractions) < 0.6
    inside = total = 0
    for f in sorted((DATA / "metal_plate" / "test" / "defective").iterdir()):
        gt = pre.crop_mask(read_mask(DATA / "metal_plate" / "ground_truth" / "defective" / f"{f.stem}_mask.png"))
        mask, _ = est(pre.crop_rgb(read_image(f)))
        inside, total = inside + (gt & mask).sum(), total + gt.sum()
    assert inside / total > 0.97  # measured 0.992


def test_make_foreground_without_sam_is_classical():
    assert isinstance(make_foreground(None), ContrastForeground)


# --- SAM engines (exported from a tiny random-weight SAM) ------------------------------------

@pytest.fixture(scope="module")
def tiny_sam_dir(tmp_path_factory):
    pytest.importorskip("segment_anything")
    from edge_foct.export.segmenter import export_segmenter, tiny_sam

    sam = tiny_sam(img_size=64)
    out = tmp_path_factory.mktemp("sam")
    export_segmenter(sam, out, "tiny", prompt="box")
    return sam, out


def test_sam_engines_equal_segment_anything(tiny_sam_dir, rng):
    import torch

    sam, folder = tiny_sam_dir
    est = make_foreground(folder)
    assert isinstance(est, SamForeground) and est.rule == "sam-box" and est.size == 64
    crop = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    item = {"image": torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32)), "original_size": (64, 64),
            "boxes": torch.tensor([[0.0, 0.0, 63.0, 63.0]])}
    with torch.no_grad():
        (out,) = sam([item], multimask_output=True)
        logits = sam.postprocess_masks(out["low_res_logits"], (64, 64), (64, 64))[0]
    want = torch.sigmoid(logits[int(out["iou_predictions"][0].argmax())]).numpy()
    np.testing.assert_allclose(est.probability(crop), want, atol=1e-4)
    mask, rule = est(crop)
    assert mask.shape == (64, 64) and rule in ("sam-box", RULE_ALMOST_EMPTY, RULE_ALMOST_FULL)
    if rule == "sam-box":
        np.testing.assert_array_equal(mask, want > 0.5)


def test_sam_output_is_resized_to_the_crop(tiny_sam_dir, rng):
    _, folder = tiny_sam_dir
    est = SamForeground.load(folder)
    crop = rng.integers(0, 255, (96, 80, 3), dtype=np.uint8)
    prob = est.probability(crop)
    assert prob.shape == (96, 80) and prob.dtype == np.float32 and ((0 <= prob) & (prob <= 1)).all()
    mask, _ = est(crop)
    assert mask.shape == (96, 80) and mask.dtype == bool
