"""vanilla: FOCT's linear-metric ablation (FastRecon-style closed-form ridge reconstruction).

Every query patch f_j is reconstructed from the memory rows M (k, c) with ridge weights,
  A = argmin_A ||f - A M||^2 + ridge ||A||^2  =>  A (G + ridge I) = F,  F = f M^T (m, k), G = M M^T,
and scores its squared residual s_j = ||f_j - A_j M||^2. The memory is the same coreset PatchCore
keeps, so patchcore vs vanilla compares the metric (nearest neighbour vs linear span) on one memory.
The residual is expanded in the k-dim coefficient space, ||f_j||^2 - 2 A_j.F_j + A_j G A_j, which
costs O(m k^2) instead of O(m k c) for the reconstruction itself. ridge = ridge_rel * mean
squared memory norm, so the regularisation follows the feature scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..coreset import coreset_size, greedy_coreset
from ..errors import EdgeFoctError
from ..knn import sq_norms
from .base import Method, PatchScores, SupportSet


@dataclass(frozen=True)
class VanillaParams:
    coreset_ratio: float = 0.10  # fraction of the K*Q support patches kept in memory (as PatchCore)
    projection_dim: int = 128  # coreset distance computed after a random projection to this
    seed: int = 0
    ridge_rel: float = 0.01  # ridge / mean squared memory norm

    def __post_init__(self) -> None:
        if self.ridge_rel <= 0:
            raise EdgeFoctError(f"vanilla: ridge_rel={self.ridge_rel} must be > 0 (e.g. 0.01)")


def ridge_residuals(f: np.ndarray, memory: np.ndarray, gram: np.ndarray, ridge: float) -> np.ndarray:
    """f (m, c), memory (k, c), gram = memory memory^T (k, k) -> (m,) squared residuals."""
    F = f @ memory.T  # (m, k)
    a = gram + np.asarray(ridge, gram.dtype) * np.eye(gram.shape[0], dtype=gram.dtype)
    A = np.linalg.solve(a, F.T).T  # (m, k) ridge weights, one solve for every patch
    res = sq_norms(f) - 2.0 * np.einsum("jk,jk->j", A, F) + np.einsum("jk,jk->j", A @ gram, A)
    return np.maximum(res, 0.0)


class Vanilla(Method):
    name = "vanilla"
    Params = VanillaParams

    def __init__(self, memory: np.ndarray, params: VanillaParams) -> None:
        self.memory = np.ascontiguousarray(memory, dtype=np.float32)  # (k, c)
        self.params = params
        self.gram = self.memory @ self.memory.T  # (k, k)
        self.ridge = params.ridge_rel * float(np.diagonal(self.gram).mean())

    @classmethod
    def fit(cls, support: SupportSet, params: VanillaParams) -> "Vanilla":
        x = support.features.reshape(-1, support.features.shape[-1])  # (K*Q, c)
        n = coreset_size(x.shape[0], params.coreset_ratio)
        return cls(x[greedy_coreset(x, n, params.projection_dim, seed=params.seed)], params)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"memory": self.memory}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: VanillaParams) -> "Vanilla":
        return cls(arrays["memory"], params)

    @classmethod
    def flops(cls, m_memory: int, q: int, d: int, params: VanillaParams | None = None) -> float:
        k = m_memory  # F = f M^T, the solve, A G, the two row dots, ||f||^2
        return 2.0 * q * k * d + 2.0 / 3.0 * k**3 + 2.0 * q * k * k + 2.0 * q * k * k + 4.0 * q * k + 2.0 * q * d

    def score(self, features: np.ndarray, *, update: bool = True) -> PatchScores:
        f = np.asarray(features, dtype=np.float32)  # (m, c)
        res = ridge_residuals(f, self.memory, self.gram, self.ridge)
        return PatchScores(res.astype(np.float32), {"memory_size": int(self.memory.shape[0]), "ridge": self.ridge})
