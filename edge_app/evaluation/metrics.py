"""Detection metrics on raw scores (no normalisation over the test set).

NumPy (+ OpenCV for connected components) only, so the core install can report them; the tests
check them against scikit-learn and against a definition-level AUPRO.

Every metric is exact, with no threshold subsampling: each is computed from the sorted scores of
the negatives (np.sort, SIMD) and binary searches of the positives into them, which is
O(N log N) and keeps one float32 copy of the ~40M pixels of a large category in memory. Ties
count as in scikit-learn (a threshold is a distinct score; a sample is positive when score >= it).
"""

from __future__ import annotations

import cv2
import numpy as np


def _split(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (positive scores, negative scores), each sorted ascending."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores).ravel()
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    return np.sort(scores[labels]), np.sort(scores[~labels])


def _auroc_sorted(pos: np.ndarray, neg: np.ndarray) -> float:
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    below = np.searchsorted(neg, pos, "left")  # negatives strictly below each positive
    tied = np.searchsorted(neg, pos, "right") - below
    u = below.sum(dtype=np.int64) + 0.5 * tied.sum(dtype=np.int64)
    return float(u / (len(pos) * len(neg)))


def _f1_max_sorted(pos: np.ndarray, neg: np.ndarray) -> float:
    # Lowering the threshold between two positive scores only adds false positives, so the best
    # threshold is one of the positive scores: those are the only candidates checked.
    p = len(pos)
    if p == 0:
        return float("nan")
    t = pos[np.r_[True, pos[1:] != pos[:-1]]]  # (T,) distinct positive scores
    tp = p - np.searchsorted(pos, t, "left")  # positives >= t
    fp = len(neg) - np.searchsorted(neg, t, "left")  # negatives >= t
    return float(np.max(2.0 * tp / (tp + fp + p)))  # 2TP / (2TP + FP + FN), FN = P - TP


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties count 1/2.

    labels (N,) bool/int, scores (N,) float. NaN when only one class is present.
    """
    return _auroc_sorted(*_split(labels, scores))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over every threshold (verdict: score >= threshold); labels, scores (N,). NaN without positives."""
    return _f1_max_sorted(*_split(labels, scores))


def oracle_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    """The threshold that minimises false-alarm rate + miss rate on these very labels (verdict:
    score > threshold) -> (threshold, false-alarm rate, miss rate). Not a rule: it looks at the
    answers; it is the floor any threshold from normal images is measured against. labels, scores (N,).
    NaN scores count as flagged (fail closed). NaN rates when a class is absent."""
    labels = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    s = np.where(np.isnan(s), np.inf, s)
    pos, neg = np.sort(s[labels]), np.sort(s[~labels])
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), float("nan"), float("nan")
    finite = np.unique(s[np.isfinite(s)])
    cand = np.r_[finite.min() - 1.0 if finite.size else 0.0, finite]  # (T,) below all, then each score
    fa = (len(neg) - np.searchsorted(neg, cand, "right")) / len(neg)  # negatives > t
    miss = np.searchsorted(pos, cand, "right") / len(pos)  # positives <= t
    i = int(np.argmin(fa + miss))
    return float(cand[i]), float(fa[i]), float(miss[i])


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1), for plots."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, np.float64).ravel()
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each tie group
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    return (np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)])


def region_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """masks (N, H, W) bool -> (weight of each True pixel in ``masks[masks]`` order, number of regions).

    A pixel's weight is 1 / (size of its 8-connected ground-truth region), as in the MVTec AD
    evaluation code, so that the weights of every region sum to one.
    """
    out, regions = [], 0
    for m in masks:
        if not m.any():
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
        inv_area = 1.0 / np.maximum(stats[:, cv2.CC_STAT_AREA], 1)  # (n,), label 0 = background
        out.append(inv_area[lab[m]])
        regions += n - 1
    return (np.concatenate(out) if out else np.zeros(0)), regions


def _aupro_sorted(pos: np.ndarray, cum: np.ndarray, neg: np.ndarray, limit: float) -> float:
    """pos (P,) ascending defect-pixel scores; cum (P+1,) PRO carried by the positives below
    index i (cum[-1] == 1); neg (N,) ascending non-defect scores."""
    n = len(neg)
    # Only thresholds from the largest score down to where FPR passes `limit` matter: take the
    # distinct negative scores of the top `limit` fraction (the group at `start` crosses it).
    start = max(0, int(np.floor(n * (1.0 - limit))) - 1)
    tail = neg[start:]
    first = np.flatnonzero(np.r_[True, tail[1:] != tail[:-1]])  # (T,) first index of each distinct value
    t_asc = tail[first]  # (T,) distinct thresholds, ascending
    below_neg = start + first  # negatives < t: known from the sort, except for a group that began before start
    below_neg[0] = np.searchsorted(neg, t_asc[0], "left")
    # Positives < t and <= t for every threshold, by bucketing the P positives among the T
    # thresholds (P log T) rather than searching T thresholds among the positives (T log P, T ~ 0.3 N).
    T = len(t_asc)
    lt = np.cumsum(np.bincount(np.searchsorted(t_asc, pos, "right"), minlength=T + 1))[:T]  # pos < t_k
    le = np.cumsum(np.bincount(np.searchsorted(t_asc, pos, "left"), minlength=T + 1))[:T]  # pos <= t_k
    t_rev = slice(None, None, -1)  # descending thresholds: FPR ascending
    fpr = (n - below_neg[t_rev]) / n  # (T,) ascending, last one > limit
    pro_ge = cum[-1] - cum[lt[t_rev]]  # PRO with score >= t
    pro_gt = cum[-1] - cum[le[t_rev]]  # PRO with score > t: the point before
    # Between consecutive negative thresholds the curve steps up vertically (positives only, no
    # area), then runs straight from (fpr[k-1], pro_gt[k]) to (fpr[k], pro_ge[k]).
    x0 = np.r_[0.0, fpr[:-1]]
    k = int(np.searchsorted(fpr, limit, "left"))  # the segment that reaches `limit`
    area = float(np.sum((fpr[:k] - x0[:k]) * (pro_gt[:k] + pro_ge[:k]) / 2.0))
    y_end = pro_gt[k] + (limit - x0[k]) / (fpr[k] - x0[k]) * (pro_ge[k] - pro_gt[k])
    area += (limit - x0[k]) * (pro_gt[k] + y_end) / 2.0
    return float(area / limit)


def _pro_inputs(masks: np.ndarray, maps: np.ndarray,
                regions: tuple[np.ndarray, int] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """-> (defect-pixel scores ascending, their cumulative PRO weights (P+1,), number of regions)."""
    weights, n_regions = region_weights(masks) if regions is None else regions
    pos = maps[masks]
    order = np.argsort(pos, kind="stable")
    return pos[order], np.r_[0.0, np.cumsum(weights[order])] / max(n_regions, 1), n_regions


def aupro(masks: np.ndarray, maps: np.ndarray, limit: float = 0.3) -> float:
    """Area under the per-region-overlap (PRO) curve up to false-positive rate ``limit``, / limit.

    masks (N, H, W) bool ground truth, maps (N, H, W) float anomaly maps. PRO(t) is the mean over
    ground-truth regions (8-connected, per image) of the fraction of the region's pixels with
    score >= t; FPR(t) the fraction of all non-defect pixels (of every image) with score >= t.
    The curve has one point per distinct score, joined by straight lines; the area runs from
    FPR 0 to ``limit`` (the last segment interpolated at ``limit``) and is divided by ``limit``,
    as in the MVTec AD evaluation code. NaN without regions or without non-defect pixels.
    """
    if not 0.0 < limit <= 1.0:
        raise ValueError(f"AUPRO limit {limit} must be in (0, 1]")
    masks, maps = np.asarray(masks, bool), np.asarray(maps)
    pos, cum, n_regions = _pro_inputs(masks, maps)
    neg = np.sort(maps[~masks])
    if n_regions == 0 or len(neg) == 0:
        return float("nan")
    return _aupro_sorted(pos, cum, neg, limit)


def pixel_metrics(masks: np.ndarray, maps: np.ndarray, pro_limit: float = 0.3,
                  regions: tuple[np.ndarray, int] | None = None) -> dict[str, float]:
    """masks (N, H, W) bool, maps (N, H, W) float -> pixel AUROC, pixel F1-max, AUPRO@pro_limit.

    One sort of the non-defect pixels serves all three. ``regions``: ``region_weights(masks)``,
    computed once per data set when several methods are scored on the same masks.
    """
    masks, maps = np.asarray(masks, bool), np.asarray(maps)
    if not 0.0 < pro_limit <= 1.0:
        raise ValueError(f"AUPRO limit {pro_limit} must be in (0, 1]")
    pos, cum, n_regions = _pro_inputs(masks, maps, regions)  # pos ascending
    neg = np.sort(maps[~masks])
    pro = _aupro_sorted(pos, cum, neg, pro_limit) if n_regions and len(neg) else float("nan")
    return {"pixel_auroc": _auroc_sorted(pos, neg), "pixel_f1_max": _f1_max_sorted(pos, neg), "aupro": pro}
