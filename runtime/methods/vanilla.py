"""vanilla: FOCT's linear-metric ablation (FastRecon-style closed-form ridge reconstruction).

Every query patch f_j is reconstructed from the memory rows M (k, c) with ridge weights,
  A = argmin_A ||f - A M||^2 + ridge ||A||^2  =>  A (G + ridge I) = F,  F = f M^T (m, k), G = M M^T,
and scores its squared residual s_j = ||f_j - A_j M||^2. The memory is the same coreset PatchCore
keeps, so patchcore vs vanilla compares the metric (nearest neighbour vs linear span) on one memory.
The system matrix is the same for every query, so it is solved once per memory (``ridge_lift``) and
A comes out of the GEMM that gives F; the residual is then ||f_j||^2 - A_j.F_j - ridge ||A_j||^2
(from A G = F - ridge A): O(m k c) per query, no (m, k, k) work and no reconstruction. ridge = ridge_rel * mean
squared memory norm, so the regularisation follows the feature scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..coreset import support_coreset
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


def ridge_lift(memory: np.ndarray, gram: np.ndarray, ridge: float) -> np.ndarray:
    """memory (k, c), gram (k, k) -> lift (2k, c) = [M; (G + ridge I)^-1 M], one solve per memory,
    so that f lift^T = [F | A] is one GEMM per query."""
    a = gram + np.asarray(ridge, gram.dtype) * np.eye(gram.shape[0], dtype=gram.dtype)
    return np.ascontiguousarray(np.vstack([memory, np.linalg.solve(a, memory).astype(memory.dtype)]))


def ridge_residuals(f: np.ndarray, memory: np.ndarray, gram: np.ndarray, ridge: float,
                    lift: np.ndarray | None = None) -> np.ndarray:
    """f (m, c), memory (k, c), gram = memory memory^T (k, k) -> (m,) squared residuals.

    A (G + ridge I) = F gives A G = F - ridge A, so the residual ||f||^2 - 2 A.F + A G.A is
    ||f||^2 - A.F - ridge ||A||^2: no (m, k, k) work once A is known. ``lift``: ``ridge_lift``'s
    output when the caller keeps it (computed here otherwise).
    """
    k = memory.shape[0]
    FA = f @ (ridge_lift(memory, gram, ridge) if lift is None else lift).T  # (m, 2k)
    F, A = FA[:, :k], FA[:, k:]
    res = sq_norms(f) - np.einsum("jk,jk->j", A, F) - ridge * np.einsum("jk,jk->j", A, A)
    return np.maximum(res, 0.0)


class Vanilla(Method):
    name = "vanilla"
    Params = VanillaParams
    #: a reconstruction's residual grows as the memory it mixes shrinks: threshold LOO fits keep its size
    loo_matched_capacity = ("coreset_ratio",)

    def __init__(self, memory: np.ndarray, params: VanillaParams) -> None:
        self.memory = np.ascontiguousarray(memory, dtype=np.float32)  # (k, c)
        self.params = params
        self.gram = self.memory @ self.memory.T  # (k, k)
        self.ridge = params.ridge_rel * float(np.diagonal(self.gram).mean())
        self.lift = ridge_lift(self.memory, self.gram, self.ridge)  # (2k, c)

    @classmethod
    def fit(cls, support: SupportSet, params: VanillaParams) -> "Vanilla":
        return cls(support_coreset(support.features, params.coreset_ratio, params.projection_dim, params.seed), params)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"memory": self.memory}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: VanillaParams) -> "Vanilla":
        return cls(arrays["memory"], params)

    @classmethod
    def flops(cls, m_memory: int, q: int, d: int, params: VanillaParams | None = None) -> float:
        k = m_memory  # [F | A] = f lift^T, the two row dots, ||f||^2 (the solve is per memory, not per query)
        return 2.0 * q * 2 * k * d + 4.0 * q * k + 2.0 * q * d

    def score(self, features: np.ndarray, *, update: bool = True) -> PatchScores:
        f = np.asarray(features, dtype=np.float32)  # (m, c)
        res = ridge_residuals(f, self.memory, self.gram, self.ridge, self.lift)
        return PatchScores(res.astype(np.float32), {"memory_size": int(self.memory.shape[0]), "ridge": self.ridge})
