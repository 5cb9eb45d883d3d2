"""A verdict threshold from normal images only (DESIGN.md 2.4): no defect, no test-set statistic.

Two stages, both recorded so the choice can be audited.

**Fit** (``calibrate``), rule ``loo-patch-q-capped``. Every support image gets V jittered views
(runtime/augment.py). Each view of image i is scored against a memory fitted on the other K - 1
images (leave-one-out): K*V*Q patch scores. For the reconstruction methods (PatchCore+, vanilla:
``Method.loo_matched_capacity``) the leave-one-out memory keeps the full memory's row count (its
coreset ratio x K / (K - 1)): a residual from half the prototypes sat far above what the full bank
gives new good parts (2-shot metal_plate: 0 % false alarms, 80 % misses; matched: 18 % / 38 %;
benchmarks/threshold_rules.md). The threshold is their quantile at 1 - 1/Q, the
level that one patch of a held-out normal view exceeds on average (Q patches per image): a
statistic of thousands of values, not of K. It is **capped** at the largest image score of the
views against the full memory (``self-views-max``, the 1-shot rule): with K = 2 each leave-one-out
memory is one image, and two support images that differ (pose, light, texture) put the quantile
far above every good part's score against both (2-shot, uncapped: glass 38-40 % and metal_plate
35-45 % of defects missed); the views against the full memory bound it by what jitter alone does.
Over the shared data it halved the 2-shot misses (foct/edge 61 -> 32 %) for more false alarms
(4 -> 12 %); FOCT's episodic gate follows the threshold, so at 4 shots it admits less and its image
AUROC fell 0.8 points (benchmarks/threshold_rules.md). Why not the largest of the K*V image scores (the
former rule ``loo-views-max``): a leave-one-out memory holds K - 1 images, so held-out views
score higher than new good parts will against all K; that maximum sat above nearly every defect
(benchmarks/threshold_rules.md). It stays as the **ceiling** of the stream rule; the **floor** is
the median image score of the views against the full memory (which holds their own source
image, so it is low-biased). With K = 1 there is nothing to leave out: rule ``self-views-max``
(views against the image's own memory, low-biased), ceiling twice that.

**Stream** (``StreamThreshold``, used by ``edge-foct serve``): the running distribution of the
stream's image scores. After ``warmup`` frames the threshold is ``median(s) + k * 1.4826 * MAD(s)``
(a robust mean + k sigma) over a bounded window. Guards: only frames judged normal enter the
window (defects cannot pull it up), and the value stays within [floor, ceiling] from the support
images (a defect-heavy or an unusually quiet stream cannot move it further). The same statistic on
log scores was measured too; it over-reacts to a wide spread of good scores (the demo product went
straight to the ceiling).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .errors import EdgeFoctError
from .methods import SupportSet, method_class

#: levels of the pooled leave-one-out patch-score quantiles kept in the manifest
PATCH_LEVELS = (0.5, 0.9, 0.99, 0.999)


@dataclass(frozen=True)
class Threshold:
    """value: the verdict threshold; samples: leave-one-out image scores (K*V); self_samples:
    image scores of the views against the full memory; floor/ceiling: bounds for the stream rule
    (None for a user override); patch_quantiles: level -> quantile of the pooled patch scores."""

    value: float
    rule: str
    samples: tuple[float, ...] = ()
    self_samples: tuple[float, ...] = ()
    floor: float | None = None
    ceiling: float | None = None
    patch_quantiles: tuple[tuple[float, float], ...] = ()

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        s = np.asarray(self.samples) if self.samples else np.zeros(1)
        d.update(samples=[round(float(v), 6) for v in self.samples],
                 self_samples=[round(float(v), 6) for v in self.self_samples],
                 patch_quantiles={f"{q:.6g}": round(float(v), 6) for q, v in self.patch_quantiles},
                 median=float(np.median(s)), p95=float(np.quantile(s, 0.95)))
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Threshold":
        """Inverse of ``to_json`` (banks written by the former rule have no floor or ceiling)."""
        return cls(value=finite_threshold(d.get("value"), "manifest threshold value"), rule=str(d["rule"]),
                   samples=tuple(d.get("samples", ())), self_samples=tuple(d.get("self_samples", ())),
                   floor=d.get("floor"), ceiling=d.get("ceiling"),
                   patch_quantiles=tuple((float(q), float(v)) for q, v in d.get("patch_quantiles", {}).items()))


def calibrate(method: str, params: Any, support: SupportSet, views: np.ndarray) -> Threshold:
    """views (K, V, Q, D) features of jittered support views -> Threshold (rule in the module doc)."""
    cls = method_class(method)
    k, _, q, _ = views.shape
    full = cls.fit(support, params)
    self_scores = [float(full.score(v, update=False).scores.max()) for i in range(k) for v in views[i]]
    floor = float(np.median(self_scores))
    if k == 1:
        value = max(self_scores)
        return Threshold(value, "self-views-max", tuple(self_scores), tuple(self_scores),
                         floor=floor, ceiling=2.0 * value)
    patches, images = [], []
    loo_params = loo_fit_params(cls, params, k)
    for i in range(k):
        scorer = cls.fit(support.subset([j for j in range(k) if j != i]), loo_params)
        for v in views[i]:
            s = scorer.score(v, update=False).scores  # (Q,)
            patches.append(s)
            images.append(float(s.max()))
    pooled = np.concatenate(patches)  # (K*V*Q,)
    levels = sorted({*PATCH_LEVELS, 1.0 - 1.0 / q})
    quant = tuple((lv, float(np.quantile(pooled, lv))) for lv in levels)
    # the leave-one-out quantile, never above the highest score of the views against the full memory
    value = min(float(np.quantile(pooled, 1.0 - 1.0 / q)), max(self_scores))
    ceiling = max(images)
    return Threshold(value, "loo-patch-q-capped", tuple(images), tuple(self_scores),
                     floor=min(floor, value), ceiling=max(ceiling, value), patch_quantiles=quant)


def loo_fit_params(cls: type, params: Any, k: int) -> Any:
    """The parameters of the leave-one-out fits (K - 1 of K images): ``cls.loo_matched_capacity``'s
    ratios scaled by K / (K - 1), capped at 1; the method's own parameters otherwise."""
    names = getattr(cls, "loo_matched_capacity", ())
    if not names or k < 2:
        return params
    return replace(params, **{n: min(1.0, getattr(params, n) * k / (k - 1)) for n in names})


def finite_threshold(value: Any, what: str = "threshold") -> float:
    """``value`` as a float, or one-line EdgeFoctError when it is not a finite number: a NaN or
    infinite threshold would pass (inf) or, compared naively, also pass (NaN) every part."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise EdgeFoctError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(v):
        raise EdgeFoctError(f"{what} {value!r} is not a finite number: a verdict needs a real threshold "
                            f"(NaN or inf would pass every part)")
    return v


def is_defective(score: float, threshold: float) -> bool:
    """The verdict, failing closed: a score that is not a number (NaN) is defective, never good."""
    return not (score <= threshold)


def override(value: float) -> Threshold:
    return Threshold(value=finite_threshold(value), rule="user")


@dataclass(frozen=True)
class StreamParams:
    k: float = 3.0  # robust sigmas (1.4826 MAD) above the median: 0.13 % one-sided if normal
    warmup: int = 20  # frames accepted before the stream moves the threshold
    window: int = 256  # accepted frames remembered (bounded memory, follows slow drift)


class StreamThreshold:
    """The running threshold of a stream, between a floor and a ceiling from the support images."""

    def __init__(self, start: Threshold, params: StreamParams = StreamParams()) -> None:
        if start.floor is None or start.ceiling is None:
            raise EdgeFoctError(f"threshold rule {start.rule!r} has no floor/ceiling for the stream rule; "
                                f"re-run `edge-foct fit` or pass --fixed-threshold")
        self.params = params
        self.start, self.floor, self.ceiling = start.value, float(start.floor), float(start.ceiling)
        self.value = start.value
        self._scores: deque[float] = deque(maxlen=params.window)

    @property
    def accepted(self) -> int:
        return len(self._scores)

    def update(self, score: float) -> float:
        """Feed one frame's image score (already judged against ``value``); returns the new value.
        A non-finite score (NaN, inf) never enters the window: it is judged defective."""
        if math.isfinite(score) and score <= self.value:
            self._scores.append(float(score))
        if len(self._scores) >= self.params.warmup:
            a = np.fromiter(self._scores, np.float64)
            med = float(np.median(a))
            sigma = 1.4826 * float(np.median(np.abs(a - med)))
            self.value = float(np.clip(med + self.params.k * sigma, self.floor, self.ceiling))
        return self.value

    @property
    def gate(self) -> float:
        """The online memory's gate (Method.set_gate): the verdict threshold, never above the learnt one.

        A stream whose good scores spread wide lifts the verdict threshold towards the ceiling; the
        memory must not follow it up, or the borderline patches of missed defects would become
        "normal" memory. It does follow the threshold down. ``edge-foct eval`` measures the online
        methods with the gate at the learnt threshold: the same gate whenever the stream only rises.
        """
        return min(self.value, self.start)

    def state(self) -> dict[str, np.ndarray]:
        """The window, to save beside the episodic memory: (n,) float64 image scores."""
        return {"scores": np.fromiter(self._scores, np.float64)}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of ``state``; raises ValueError on a non-finite score (nothing is kept then)."""
        saved = np.asarray(arrays.get("scores", ()), np.float64).reshape(-1)[-self.params.window:]
        if not np.isfinite(saved).all():
            raise ValueError("non-finite score in the saved threshold window")
        self._scores.clear()
        self._scores.extend(float(v) for v in saved)
        self.value = self.start
        if self._scores:
            self.update(math.inf)  # recompute from the window; inf never enters it
