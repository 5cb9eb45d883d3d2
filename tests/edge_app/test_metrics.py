"""Metrics against scikit-learn on random data, and AUPRO against hand-checked cases and its definition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from edge_foct.edge_app.evaluation import metrics


def _cases(rng, n=400):
    """(labels, scores) pairs: continuous scores, heavy ties, and ties across the classes."""
    for _ in range(4):
        y = rng.random(n) < rng.uniform(0.1, 0.9)
        s = rng.normal(size=n) + y * rng.uniform(0, 2)
        yield y, s
        yield y, np.round(s, 1)  # many ties, some between a positive and a negative
        yield y, np.round(s).astype(np.float32)


def test_auroc_matches_sklearn(rng):
    for y, s in _cases(rng):
        assert metrics.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_f1_max_matches_sklearn(rng):
    for y, s in _cases(rng):
        p, r, _ = precision_recall_curve(y, s)
        f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)
        assert metrics.f1_max(y, s) == pytest.approx(f1.max(), abs=1e-12)


def test_roc_curve_matches_sklearn(rng):
    for y, s in _cases(rng):
        fpr, tpr = metrics.roc_curve(y, s)
        f2, t2, _ = roc_curve(y, s, drop_intermediate=False)
        assert np.allclose(fpr, f2) and np.allclose(tpr, t2)


def test_one_class_gives_nan():
    assert np.isnan(metrics.auroc(np.zeros(5), np.arange(5.0)))
    assert np.isnan(metrics.f1_max(np.zeros(5), np.arange(5.0)))
    assert np.isnan(metrics.aupro(np.zeros((1, 4, 4), bool), np.ones((1, 4, 4))))


def test_aupro_hand_checked():
    # One 1x13 image. Region A = pixels 0-1, region B = pixel 3, 10 defect-free pixels.
    #   t=.95: PRO (1/2+0)/2 = .25 at FPR 0;  t=.85: FPR .1;  t=.75: B found, PRO .75;
    #   t=.65: FPR .2;  t=.55: A complete, PRO 1;  t=.45: FPR .3.
    # Area to FPR .3 = .1*.25 + .1*.75 + .1*1 = .2 -> /.3 = 2/3.
    # To FPR .15 (interpolated on the flat PRO=.75 run): .025 + .05*.75 = .0625 -> /.15.
    mask = np.zeros((1, 1, 13), bool)
    mask[0, 0, [0, 1, 3]] = True
    s = np.array([[[.95, .55, .85, .75, .65, .45, .4, .35, .3, .25, .2, .15, .1]]])
    assert metrics.aupro(mask, s, 0.3) == pytest.approx(2 / 3)
    assert metrics.aupro(mask, s, 0.15) == pytest.approx(0.0625 / 0.15)
    # A tie between a defect and a defect-free pixel makes a diagonal segment:
    # region of 2 px scored (.9, .5); 4 defect-free px (.9, .5, .2, .1).
    #   (0,0) -> (.25,.5) -> (.5,1): area to .5 = .0625 + .1875 = .25 -> /.5 = .5;
    #   to .375: .0625 + .125*(.5+.75)/2 = .140625 -> /.375 = .375.
    mask = np.array([[[True, True, False, False, False, False]]])
    s = np.array([[[.9, .5, .9, .5, .2, .1]]])
    assert metrics.aupro(mask, s, 0.5) == pytest.approx(0.5)
    assert metrics.aupro(mask, s, 0.375) == pytest.approx(0.375)


def test_regions_are_8_connected():
    m = np.zeros((1, 5, 5), bool)
    m[0, 0, 0] = m[0, 1, 1] = True  # diagonal neighbours: one region
    m[0, 4, 4] = True
    w, n = metrics.region_weights(m)
    assert n == 2 and np.allclose(np.sort(w), [0.5, 0.5, 1.0])


def _aupro_by_definition(masks, maps, limit):
    """Sweep every distinct score: binarise, per-region overlap and FPR, trapezoid to ``limit``."""
    regions = []
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(i, lab == r) for r in range(1, n + 1)]
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        xs.append(pred[~masks].mean())
        ys.append(np.mean([pred[i][r].mean() for i, r in regions]))
    xs, ys = np.array(xs), np.array(ys)
    k = np.searchsorted(xs, limit, "left")
    y_lim = ys[k - 1] + (ys[k] - ys[k - 1]) * (limit - xs[k - 1]) / (xs[k] - xs[k - 1])
    x, y = np.r_[xs[:k], limit], np.r_[ys[:k], y_lim]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / limit)


@pytest.mark.parametrize("decimals", [None, 1])
def test_aupro_matches_definition(rng, decimals):
    masks = np.zeros((4, 12, 12), bool)
    masks[0, 2:5, 2:6] = True
    masks[0, 8:10, 8:11] = True
    masks[1, 5:11, 1:3] = True
    masks[2, 0, 0] = True  # image 3 is all good
    maps = rng.random(masks.shape) + 0.6 * masks
    if decimals is not None:
        maps = np.round(maps, decimals)
    for limit in (0.3, 0.05, 1.0):
        assert metrics.aupro(masks, maps, limit) == pytest.approx(_aupro_by_definition(masks, maps, limit), abs=1e-12)


def test_pixel_metrics_agree_with_the_single_metrics(rng):
    masks = np.zeros((3, 16, 16), bool)
    masks[0, 3:7, 3:9] = True
    masks[2, 10:15, 1:4] = True
    maps = (rng.random(masks.shape) + 0.5 * masks).astype(np.float32)
    got = metrics.pixel_metrics(masks, maps, regions=metrics.region_weights(masks))
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert got["pixel_f1_max"] == pytest.approx(metrics.f1_max(masks, maps), abs=1e-12)
    assert got["aupro"] == pytest.approx(metrics.aupro(masks, maps), abs=1e-12)


def test_oracle_threshold_is_the_best_on_the_labels():
    from edge_foct.edge_app.evaluation.metrics import oracle_threshold

    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.4
    scores = rng.normal(labels * 1.0, 1.0)
    t, fa, miss = oracle_threshold(labels, scores)
    assert fa == pytest.approx((scores[~labels] > t).mean()) and miss == pytest.approx((scores[labels] <= t).mean())
    grid = np.r_[scores.min() - 1, np.sort(scores)]
    brute = min((scores[~labels] > g).mean() + (scores[labels] <= g).mean() for g in grid)
    assert fa + miss == pytest.approx(brute)
    # separable: zero error; NaN scores count as flagged
    t, fa, miss = oracle_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, np.nan]))
    assert (fa, miss) == (0.0, 0.0) and 0.2 <= t < 0.8
