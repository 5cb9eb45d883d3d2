"""A verdict threshold from normal images only (no defective samples, no test-set statistics).

Rule ``loo-views-max``: every support image gets ``V`` jittered views (runtime/augment.py). With
K >= 2 support images, the views of image i are scored against a memory fitted on the other
K - 1 images (leave-one-out); with K = 1, against the memory of the image itself. The threshold
is the largest of those K * V image scores: a normal part should not score above what a
held-out normal part scored. All samples are kept in the manifest so the choice can be audited.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .methods import SupportSet, method_class


@dataclass(frozen=True)
class Threshold:
    value: float
    rule: str
    samples: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        s = np.asarray(self.samples) if self.samples else np.zeros(1)
        d.update(samples=[round(float(v), 6) for v in self.samples],
                 median=float(np.median(s)), p95=float(np.quantile(s, 0.95)))
        return d


def calibrate(method: str, params: Any, support: SupportSet, views: np.ndarray) -> Threshold:
    """views (K, V, Q, D) features of jittered support views -> Threshold."""
    cls = method_class(method)
    k = support.features.shape[0]
    samples: list[float] = []
    for i in range(k):
        others = [j for j in range(k) if j != i] or [i]
        scorer = cls.fit(support.subset(others), params)
        for v in views[i]:
            samples.append(float(scorer.score(v, update=False).scores.max()))
    rule = "loo-views-max" if k > 1 else "self-views-max"
    return Threshold(value=max(samples), rule=rule, samples=tuple(samples))


def override(value: float) -> Threshold:
    return Threshold(value=float(value), rule="user")
