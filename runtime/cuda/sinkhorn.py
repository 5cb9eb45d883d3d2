"""Log-domain Sinkhorn on the GPU: the contract of ``runtime/sinkhorn.py``, written as numba-cuda kernels.

One kernel does the work: ``softmin_rows``, one block per row with a shared-memory log-sum-exp
reduction (``plan_rows`` then writes the plan and the row-marginal error). The column update runs
the same kernel on a transposed copy of the cost, made once per problem, so both updates read
memory coalesced (the host transposes it once; the cost is constant over the iterations). A fixed
number of iterations, no data-dependent control flow; the marginal error comes back as an output.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np
from numba import cuda, float32

from ..sinkhorn import SinkhornResult
from .lse import NEG_INF, block_lse, block_sum, lse_push

TPB = 128  # threads per row block: a few hundred columns per row is the common case

#: launch signatures, for ahead-of-time PTX builds (catalog.py)
SIG_SOFTMIN = "void(float32[:, ::1], float32[::1], float32[::1], float32, float32, float32[::1])"
SIG_PLAN = ("void(float32[:, ::1], float32[::1], float32[::1], float32[::1], float32[::1], float32[::1], "
            "float32, float32[:, ::1], float32[::1])")


@functools.lru_cache(maxsize=None)
def kernels(tpb: int = TPB) -> SimpleNamespace:
    """The kernels for ``tpb`` (a power of two) threads per row block; numba freezes ``tpb`` as a
    constant. Only the CUDA-simulator tests use a smaller width than ``TPB``."""
    if tpb & (tpb - 1):
        raise ValueError(f"threads per block must be a power of two, got {tpb}")

    @cuda.jit
    def softmin_rows(cost, pot, logw, inv_eps, eps, out):
        """out[i] = -eps * logsumexp_j((pot[j] - cost[i, j]) / eps + logw[j]); one block per row i.

        cost (n, m), pot (m,), logw (m,) log-weights, out (n,): ``softmin(eps, cost, pot + eps*logw)``.
        """
        smax = cuda.shared.array(tpb, float32)
        ssum = cuda.shared.array(tpb, float32)
        i = cuda.blockIdx.x
        t = cuda.threadIdx.x
        mx = NEG_INF
        s = float32(0.0)
        for j in range(t, cost.shape[1], tpb):
            mx, s = lse_push(mx, s, (pot[j] - cost[i, j]) * inv_eps + logw[j])
        smax[t] = mx
        ssum[t] = s
        block_lse(smax, ssum, t, tpb)
        if t == 0:
            out[i] = -eps * (smax[0] + math.log(ssum[0]))

    @cuda.jit
    def plan_rows(cost, f, g, loga, logb, a, inv_eps, plan, row_err):
        """plan[i, j] = exp((f[i] + g[j] - cost[i, j]) / eps + loga[i] + logb[j]);
        row_err[i] = |sum_j plan[i, j] - a[i]|. One block per row i."""
        acc = cuda.shared.array(tpb, float32)
        i = cuda.blockIdx.x
        t = cuda.threadIdx.x
        s = float32(0.0)
        base = f[i] * inv_eps + loga[i]
        for j in range(t, cost.shape[1], tpb):
            p = math.exp(base + (g[j] - cost[i, j]) * inv_eps + logb[j])
            plan[i, j] = p
            s += p
        acc[t] = s
        block_sum(acc, t, tpb)
        if t == 0:
            row_err[i] = abs(acc[0] - a[i])

    return SimpleNamespace(softmin_rows=softmin_rows, plan_rows=plan_rows)


def _weights(w: np.ndarray | None, n: int, what: str) -> np.ndarray:
    if w is None:
        return np.full(n, 1.0 / n, np.float32)
    w = np.ascontiguousarray(w, np.float32)
    if w.shape != (n,):
        raise ValueError(f"marginal {what} has shape {w.shape}, the cost needs ({n},)")
    return w


def iterate_device(d_cost, d_cost_t, d_loga, d_logb, d_f, d_g, eps: float, n_iter: int, stream=0,
                   tpb: int = TPB) -> None:
    """``n_iter`` Sinkhorn iterations on device arrays, updating the potentials d_f (n,), d_g (m,) in place.

    d_cost (n, m) and d_cost_t (m, n) hold the same cost; d_loga (n,), d_logb (m,) the log-marginals.
    """
    k = kernels(tpb)
    n, m = d_cost.shape
    e, inv = np.float32(eps), np.float32(1.0 / eps)
    for _ in range(int(n_iter)):
        k.softmin_rows[n, tpb, stream](d_cost, d_g, d_logb, inv, e, d_f)  # f = softmin(C, g + eps log b)
        k.softmin_rows[m, tpb, stream](d_cost_t, d_f, d_loga, inv, e, d_g)  # g = softmin(C^T, f + eps log a)


def sinkhorn_log(cost: np.ndarray, a: np.ndarray | None, b: np.ndarray | None,
                 eps: float, n_iter: int, *, tpb: int = TPB) -> SinkhornResult:
    """Same contract as ``runtime.sinkhorn.sinkhorn_log``: cost (n, m) float32, a (n,), b (m,)
    (None = uniform), eps absolute, fixed ``n_iter``. Host arrays in, host arrays out.
    ``tpb``: threads per row block (only the simulator tests change it).
    """
    cost = np.ascontiguousarray(cost, np.float32)
    n, m = cost.shape
    a, b = _weights(a, n, "a"), _weights(b, m, "b")
    stream = cuda.stream()
    d_cost = cuda.to_device(cost, stream=stream)
    d_cost_t = cuda.to_device(np.ascontiguousarray(cost.T), stream=stream)
    with np.errstate(divide="ignore"):  # a zero weight is a legal -inf log-weight
        d_loga = cuda.to_device(np.log(a), stream=stream)
        d_logb = cuda.to_device(np.log(b), stream=stream)
    d_a = cuda.to_device(a, stream=stream)
    d_f = cuda.to_device(np.zeros(n, np.float32), stream=stream)
    d_g = cuda.to_device(np.zeros(m, np.float32), stream=stream)
    iterate_device(d_cost, d_cost_t, d_loga, d_logb, d_f, d_g, eps, n_iter, stream, tpb)
    d_plan = cuda.device_array((n, m), np.float32, stream=stream)
    d_err = cuda.device_array(n, np.float32, stream=stream)
    kernels(tpb).plan_rows[n, tpb, stream](d_cost, d_f, d_g, d_loga, d_logb, d_a, np.float32(1.0 / eps),
                                           d_plan, d_err)
    plan, f, g, err = (x.copy_to_host(stream=stream) for x in (d_plan, d_f, d_g, d_err))
    stream.synchronize()
    return SinkhornResult(plan=plan, f=f, g=g, marginal_error=float(err.sum(dtype=np.float64)))
