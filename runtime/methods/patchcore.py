"""PatchCore: score = squared distance of each query patch to its nearest memory patch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..coreset import support_coreset
from .base import Method, PatchScores, SupportSet


@dataclass(frozen=True)
class PatchCoreParams:
    coreset_ratio: float = 0.10  # fraction of the K*Q support patches kept in memory
    projection_dim: int = 128  # coreset distance computed after a random projection to this
    seed: int = 0


class PatchCore(Method):
    name = "patchcore"
    Params = PatchCoreParams

    def __init__(self, memory: np.ndarray, params: PatchCoreParams) -> None:
        self.memory = np.ascontiguousarray(memory, dtype=np.float32)  # (M, D)
        self.params = params

    @classmethod
    def fit(cls, support: SupportSet, params: PatchCoreParams) -> "PatchCore":
        return cls(support_coreset(support.features, params.coreset_ratio, params.projection_dim, params.seed), params)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"memory": self.memory}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: PatchCoreParams) -> "PatchCore":
        return cls(arrays["memory"], params)

    @classmethod
    def flops(cls, m_memory: int, q: int, d: int, params: PatchCoreParams | None = None) -> float:
        # the (q, m) distance GEMM, both sets of squared norms, then add/clamp/argmin per pair
        return 2.0 * m_memory * q * d + 2.0 * (m_memory + q) * d + 4.0 * m_memory * q

    def score(self, features: np.ndarray, *, update: bool = True) -> PatchScores:
        dist, _ = self._nearest(features, self.memory)  # (Q,)
        return PatchScores(dist, {"memory_size": int(self.memory.shape[0])})
