"""Log-domain Sinkhorn (NumPy reference), written against one primitive, ``softmin``.

Entropic OT between a (n,) and b (m,) with cost C (n, m):
``min_T <T, C> + eps * KL(T || a b^T)`` subject to ``T 1 = a``, ``T^T 1 = b``.
Dual potentials f (n,), g (m,); the plan is ``T_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``.
Each iteration is two softmins (rows, then columns), so after it the column marginal is exact and
the row marginal error is the convergence measure. The iteration count is fixed and the error is
returned as an output: the loop never branches on data (the CUDA kernel in runtime/cuda/sinkhorn.py
has the same signature and the same schedule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def softmin(eps: float, cost: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The one primitive: -eps * logsumexp((h[None, :] - cost) / eps, axis=1).

    cost (n, m) float32, h (m,) float32 -> (n,) float32 (float64 in, float64 out).
    Stable for any eps > 0: the row maximum is subtracted before exp.
    """
    z = h[None, :] - cost  # (n, m), a fresh buffer reused in place below
    z *= 1.0 / eps
    mx = z.max(axis=1)  # (n,)
    z -= mx[:, None]
    np.exp(z, out=z)
    return (-eps * (mx + np.log(z.sum(axis=1)))).astype(cost.dtype, copy=False)


@dataclass(frozen=True)
class SinkhornResult:
    plan: np.ndarray  # (n, m) float32 transport plan T, rows ~ a, columns ~ b
    f: np.ndarray  # (n,) float32 dual potential
    g: np.ndarray  # (m,) float32 dual potential
    marginal_error: float  # L1 error of the row marginal after the last iteration (an output, never a branch)


def _log_marginal(w: np.ndarray | None, size: int, dtype: np.dtype) -> np.ndarray:
    if w is None:
        return np.full(size, -np.log(size), dtype)
    w = np.asarray(w, dtype)
    if w.shape != (size,):
        raise ValueError(f"marginal has shape {w.shape}, the cost needs ({size},)")
    return np.log(w)


def sinkhorn_log(cost: np.ndarray, a: np.ndarray | None, b: np.ndarray | None,
                 eps: float, n_iter: int) -> SinkhornResult:
    """Log-domain Sinkhorn, fixed n_iter iterations (no data-dependent control flow).

    cost (n, m) float32; a (n,), b (m,) positive marginals (None = uniform 1/n, 1/m); eps absolute
    (callers pass eps relative to the cost scale, e.g. eps = eps_rel * median(cost)).
    """
    dtype = cost.dtype
    n, m = cost.shape
    log_a, log_b = _log_marginal(a, n, dtype), _log_marginal(b, m, dtype)  # (n,), (m,)
    cost_t = np.ascontiguousarray(cost.T)  # (m, n): both softmins reduce along contiguous rows
    f, g = np.zeros(n, dtype), np.zeros(m, dtype)
    for _ in range(n_iter):
        f = softmin(eps, cost, g + eps * log_b)  # (n,) rows now sum to a
        g = softmin(eps, cost_t, f + eps * log_a)  # (m,) columns now sum to b
    logp = (f[:, None] + g[None, :] - cost) * (1.0 / eps)  # (n, m)
    logp += log_a[:, None]
    logp += log_b[None, :]
    plan = np.exp(logp, out=logp)
    a_ = np.exp(log_a)
    err = float(np.abs(plan.sum(axis=1) - a_).sum())
    return SinkhornResult(plan, f, g, err)
