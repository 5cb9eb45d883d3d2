"""Log-domain Sinkhorn (NumPy reference), written against one primitive, ``softmin``.

Entropic OT between a (n,) and b (m,) with cost C (n, m):
``min_T <T, C> + eps * KL(T || a b^T)`` subject to ``T 1 = a``, ``T^T 1 = b``.
Dual potentials f (n,), g (m,); the plan is ``T_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)``.
Each iteration is two softmins (rows, then columns), so after it the column marginal is exact and
the row marginal error is the convergence measure. The iteration count is fixed and the error is
returned as an output: the loop never branches on data (the CUDA kernel in runtime/cuda/sinkhorn.py
has the same signature and the same schedule).

``sinkhorn_warm`` runs the same iterates from given potentials (a warm start) with one ``exp`` per
call instead of one per half-iteration: after an exact log-domain row update it absorbs the
potentials into a kernel K and iterates the scalings u, v (the plan is diag(u) K diag(v)),
then absorbs them back. What PatchCore+'s EM calls 10 times per query.
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


def sinkhorn_warm(cost: np.ndarray, a: np.ndarray | None, b: np.ndarray | None, eps: float, n_iter: int,
                  f0: np.ndarray | None = None, g0: np.ndarray | None = None) -> SinkhornResult:
    """The iterates of ``sinkhorn_log`` started from potentials (f0 (n,), g0 (m,); None = zeros).

    Returns the total potentials (``sinkhorn_log(cost - f0 - g0, ...)`` returns increments) and
    the same plan. cost (n, m) float32. The first half-iteration is a log-domain softmin, so the
    rows of K = exp((f + g0 - C) / eps) a b^T sum to a exactly; the remaining 2 n_iter - 1
    half-iterations are matrix-vector products with K. In float32 an entry of K underflows for a
    cost ~87 eps above its row's softmin; should a whole column underflow (a scaling then leaves the
    float range), the call is redone by ``sinkhorn_log``, so the result is always the log-domain one.
    """
    dtype = cost.dtype
    n, m = cost.shape
    log_a, log_b = _log_marginal(a, n, dtype), _log_marginal(b, m, dtype)  # (n,), (m,)
    f_in = np.zeros(n, dtype) if f0 is None else np.asarray(f0, dtype)
    g_in = np.zeros(m, dtype) if g0 is None else np.asarray(g0, dtype)
    h = g_in + eps * log_b  # (m,)
    f = softmin(eps, cost, h)  # (n,) exact row update: the rows of K below sum to a
    K = h[None, :] - cost  # (n, m)
    K += (f + eps * log_a)[:, None]
    K *= 1.0 / eps
    np.exp(K, out=K)
    a_, b_ = np.exp(log_a), np.exp(log_b)
    u = np.ones(n, dtype)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        for it in range(n_iter):
            if it:
                u = a_ / (K @ v)  # (n,) row update
            v = b_ / (u @ K)  # (m,) column update
        K *= u[:, None]
        plan = np.multiply(K, v[None, :], out=K)  # (n, m)
        ok = bool((u > 0).all() and (v > 0).all() and np.isfinite(u).all() and np.isfinite(v).all()
                  and np.isfinite(plan).all())
    if not ok:  # a scaling left the float range: the exact log-domain path from the same start
        r = sinkhorn_log(cost - f_in[:, None] - g_in[None, :], a, b, eps, n_iter)
        return SinkhornResult(r.plan, f_in + r.f, g_in + r.g, r.marginal_error)
    err = float(np.abs(plan.sum(axis=1) - a_).sum())
    return SinkhornResult(plan, (f + eps * np.log(u)).astype(dtype), (g_in + eps * np.log(v)).astype(dtype), err)


def semi_relaxed_plan(cost: np.ndarray, eps: float, b: np.ndarray | None = None) -> SinkhornResult:
    """Entropic OT with only the column marginal b enforced (None = uniform 1/m), the rows free.

    The limit of unbalanced OT as the KL weight on the row marginal goes to 0: each column j
    spreads its mass b_j over the rows by a softmin of its costs, T_ij = b_j softmax_i(-C_ij / eps).
    Exact in one pass (no iterations). cost (n, m) float32 -> plan (n, m); f = 0, g (m,) the
    column softmins; ``marginal_error`` is the L1 distance of the (free) row sums from uniform 1/n,
    reported as a measure of how unevenly the rows are used, never enforced.
    """
    dtype = cost.dtype
    n, m = cost.shape
    log_b = _log_marginal(b, m, dtype)
    g = softmin(eps, np.ascontiguousarray(cost.T), np.zeros(n, dtype))  # (m,) -eps logsumexp_i(-C_ij / eps)
    logp = (g[None, :] - cost) * (1.0 / eps)  # (n, m), log softmax over i
    logp += log_b[None, :]
    plan = np.exp(logp, out=logp)
    err = float(np.abs(plan.sum(axis=1) - 1.0 / n).sum())
    return SinkhornResult(plan, np.zeros(n, dtype), g, err)
