"""Judge a support set's foreground masks: use FOCT's fg/bg split, or fall back to oct's memory.

A wrong mask hurts more than no mask: a 3-7 % highlight blob on a dark part that fills the frame
splits the memory into "blob" and "everything else", and FOCT falls below OCT (issue 13). The judge
reads four things off the support set and keeps the split only when every reading passes:

- coverage     (K,) fraction of the patch grid marked foreground, per support image; each must lie in
               [min_coverage, max_coverage] (a speck is not the part; a full frame splits nothing)
- agreement    mean pairwise IoU of the K grid masks (K >= 2; NaN at K = 1, where it does not vote):
               the same part in the same station should get about the same mask
- stability    mean IoU, over ``views`` jittered views per support crop (runtime/augment.py's jitter,
               the threshold's views), of the estimator's mask of the view against the support's mask
               warped by the same jitter: a mask that moves with lighting noise is not the part
- separation   how well the mask splits the support's patch features into two clusters: 2-means on
               the L2-normalised patch features (K*Q, D), balanced agreement of the clusters with the
               mask (0.5 = unrelated, 1 = the mask is a feature cluster)

The thresholds (``JudgeParams``' defaults) were chosen leave-one-category-out over the five
categories of ../shared/data (benchmarks/foct_loco.py; benchmarks/README.md "FOCT's foreground
judge and constants, leave-one-category-out"). The decision and its readings go into the bank
manifest (runtime/fit.py ``fit_bank``) and eval's records (``foreground_split_used`` per split).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import cv2
import numpy as np

from .augment import jitter_transforms

#: crop (H, W, 3) uint8 -> (H, W) bool mask, rule (runtime/fit.py ForegroundFn)
Estimator = Callable[[np.ndarray], tuple[np.ndarray, str]]

RULE_SPLIT = "judge:split"  # every reading passed: FOCT's fg/bg memory
RULE_FALLBACK = "judge:fallback-oct"  # a reading failed: oct's memory (no split)
RULE_NO_SPLIT = "judge:estimator-full-frame"  # the estimator itself marked every support all foreground


@dataclass(frozen=True)
class JudgeParams:
    """Thresholds of the decision (module docstring); a reading of NaN does not vote."""

    # chosen leave-one-category-out (benchmarks/foct_loco.py, 1 / 2 / 4 shots and pooled): every fold chose these. On
    # ../shared/data no category has a wrong mask, so any thresholds that keep metal_plate's and
    # bottle's masks tie; the tie rule takes the strictest of the grid (fall back when unsure)
    min_coverage: float = 0.20
    max_coverage: float = 0.95
    min_agreement: float = 0.5
    min_stability: float = 0.85
    min_separation: float = 0.7
    views: int = 4  # jittered views per support crop for the stability reading
    seed: int = 0


@dataclass
class ForegroundDecision:
    """What the judge decided for one support set, with the readings it decided on."""

    use_split: bool
    rule: str
    reason: str
    readings: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.readings.items()}
        return {"use_split": self.use_split, "rule": self.rule, "reason": self.reason, "readings": clean,
                "thresholds": self.params}


def coverage(grid_masks: np.ndarray) -> np.ndarray:
    """(K, Q) bool -> (K,) foreground fraction of each support's grid."""
    return grid_masks.reshape(len(grid_masks), -1).mean(axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks of one shape (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def agreement(grid_masks: np.ndarray) -> float:
    """(K, Q) bool -> mean pairwise IoU; NaN for K < 2."""
    k = len(grid_masks)
    pairs = [iou(grid_masks[i], grid_masks[j]) for i in range(k) for j in range(i + 1, k)]
    return float(np.mean(pairs)) if pairs else math.nan


def stability(crops: list[np.ndarray], masks: list[np.ndarray], estimator: Estimator, views: int,
              seed: int = 0) -> float:
    """crops: K (H, W, 3) uint8; masks: their K (H, W) bool masks -> mean IoU over K x views of the
    estimator's mask of a jittered crop against the same jitter applied to the crop's mask."""
    out = []
    for i, (crop, mask) in enumerate(zip(crops, masks)):
        h, w = crop.shape[:2]
        for m, gain, bias in jitter_transforms(h, w, views, seed=seed + i):
            view = cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            view = np.clip(view.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
            moved = cv2.warpAffine(mask.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST,
                                   borderMode=cv2.BORDER_REPLICATE).astype(bool)
            out.append(iou(estimator(view)[0], moved))
    return float(np.mean(out)) if out else math.nan


def two_means(x: np.ndarray, iters: int = 20) -> np.ndarray:
    """(N, D) float -> (N,) bool cluster labels of a deterministic 2-means (farthest-point start)."""
    c0 = x[np.argmax(((x - x.mean(0)) ** 2).sum(1))]
    c1 = x[np.argmax(((x - c0) ** 2).sum(1))]
    lab = np.zeros(len(x), bool)
    for _ in range(iters):
        new = ((x - c1) ** 2).sum(1) < ((x - c0) ** 2).sum(1)
        if new.all() or not new.any() or np.array_equal(new, lab):
            return new
        lab = new
        c0, c1 = x[~lab].mean(0), x[lab].mean(0)
    return lab


def separation(features: np.ndarray, grid_masks: np.ndarray) -> float:
    """features (K, Q, D), grid_masks (K, Q) bool -> balanced agreement in [0.5, 1] of the mask with
    a 2-means split of the L2-normalised patch features (the better of the two label matchings)."""
    x = features.reshape(-1, features.shape[-1]).astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = grid_masks.reshape(-1)
    if y.all() or not y.any():
        return math.nan
    lab = two_means(x)
    bal = 0.5 * (lab[y].mean() + (~lab[~y]).mean())
    return float(max(bal, 1.0 - bal))


def readings(crops: list[np.ndarray], masks: list[np.ndarray], grid_masks: np.ndarray,
             features: np.ndarray | None, estimator: Estimator, params: JudgeParams) -> dict[str, Any]:
    """Every reading of one support set (module docstring); ``features`` None skips separation."""
    cov = coverage(grid_masks)
    return {
        "coverage": [float(c) for c in cov],
        "agreement": agreement(grid_masks),
        "stability": stability(crops, masks, estimator, params.views, params.seed),
        "separation": separation(features, grid_masks) if features is not None else math.nan,
    }


def decide(read: dict[str, Any], params: JudgeParams) -> tuple[bool, str]:
    """Readings -> (use the split?, the first failed reading or "all readings passed")."""
    cov = read["coverage"]
    if min(cov) < params.min_coverage:
        return False, f"coverage {min(cov):.3f} < {params.min_coverage}"
    if max(cov) > params.max_coverage:
        return False, f"coverage {max(cov):.3f} > {params.max_coverage}"
    for key, floor in (("agreement", params.min_agreement), ("stability", params.min_stability),
                       ("separation", params.min_separation)):
        v = read[key]
        if not math.isnan(v) and v < floor:
            return False, f"{key} {v:.3f} < {floor}"
    return True, "all readings passed"


def judge(crops: list[np.ndarray], masks: list[np.ndarray], grid_masks: np.ndarray, rules: list[str],
          features: np.ndarray | None, estimator: Estimator, params: JudgeParams = JudgeParams(),
          full_frame: Callable[[str], bool] = lambda r: r.startswith("full-frame")) -> ForegroundDecision:
    """crops / masks: K support crops (H, W, 3) uint8 and their (H, W) bool masks; grid_masks (K, Q)
    bool; rules: the estimator's rule per image; features (K, Q, D) or None -> the decision."""
    p = asdict(params)
    if all(full_frame(r) for r in rules):  # nothing to split: the estimator already stayed out
        return ForegroundDecision(False, RULE_NO_SPLIT, "every support mask is the full frame",
                                  {"coverage": [float(c) for c in coverage(grid_masks)]}, p)
    read = readings(crops, masks, grid_masks, features, estimator, params)
    use, reason = decide(read, params)
    return ForegroundDecision(use, RULE_SPLIT if use else RULE_FALLBACK, reason, read, p)
