"""FOCT's edge transport step as one OpenVINO graph, on the backbone engine's threads.

    transport = OpenVinoTransport(threads=2)
    fit = transport(memory, queries, tau_ratio, rho=0.5, select_map="backward")   # -> SoftNNFit

The same result as ``runtime.transport.soft_nn_transport`` (the NumPy reference), in one call: the
cost matrix C (M, Q) = ||m_i - q_j||^2 by GEMM, tau = tau_ratio x the median over query patches of
the nearest cost (floored at 1e-3 x the mean cost), the backward and forward maps softmax(-C / tau)
over memory rows and over query patches (exponents floored at ``transport.exp_floor``, as the
reference), the patch scores, each memory row's best query patch (log space: the unfloored pick),
the concentration and the CT loss. Nothing of size (M, Q) leaves the graph.

Why: beside an OpenVINO backbone, the reference spent 3.7 ms of a 19 ms frame at 256 px (WRN-50-2,
M = 271, Q = 1024, D = 1024): the matrix on OpenVINO (2.4 ms, (Q, M) then transposed in NumPy), then
two softmaxes, the median and the expectations in NumPy on one thread (1.2 ms). Here the GEMM runs as
(M, D) x (D, Q) with the -2 folded into the memory side and every (M, Q) pass on the pool's threads:
3.0 ms, idle box (benchmarks/README.md "CPU engines").

Precision: always f32, whatever the engine's precision. bf16 inputs were measured and refused: on
WideResNet features the centred bf16 GEMM is off by up to 0.4 tau in the exponents (8 bits of mantissa
on |q|^2 ~ 5800 against nearest costs ~ 200), i.e. transport weights off by up to 50 %. In f32 the
numbers are the reference's to float rounding (scores 1e-4 relative, the same best query per row;
tests/runtime/engines/test_openvino_transport.py).

One graph per (D, rho, select_map), dynamic M and Q (the episodic memory grows online), compiled the
first time it is seen; one infer request each, behind a lock.
"""

from __future__ import annotations

import threading

import numpy as np

from ..transport import SoftNNFit, exp_floor
from .openvino_distance import RequestCache, _ops
from .openvino_engine import import_openvino


def _graph(ov, d: int, rho: float, select_map: str):
    """queries (Q, d), memory (M, d), tau_ratio () -> scores (Q,), best query (M, 1) int64, its
    log-probability (M, 1), concentration (), CT loss (), tau () as an ov.Model."""
    ops = _ops()

    def i64(v):
        return ops.constant(np.array(v, np.int64))

    def f32(v):
        return ops.constant(np.float32(v))

    q = ops.parameter([-1, d], np.float32, name="queries")
    m = ops.parameter([-1, d], np.float32, name="memory")
    tau_ratio = ops.parameter([], np.float32, name="tau_ratio")
    qn = ops.unsqueeze(ops.reduce_sum(ops.multiply(q, q), i64([1]), False), i64([0]))  # (1, Q)
    mn = ops.reduce_sum(ops.multiply(m, m), i64([1]), True)  # (M, 1)
    cross = ops.matmul(ops.multiply(m, f32(-2.0)), q, False, True)  # (M, Q) -2 m.q
    cost = ops.maximum(ops.add(ops.add(mn, qn), cross), f32(0.0))  # (M, Q)
    # tau: tau_ratio x median_j min_i C_ij (np.median: the mean of the two middle values), floored
    col_min = ops.reduce_min(cost, i64([0]), True)  # (1, Q)
    n_q = ops.gather(ops.shape_of(q), i64([0]), i64(0))  # (1,)
    lowest = ops.topk(ops.reshape(col_min, i64([-1]), False),
                      ops.squeeze(ops.add(ops.divide(n_q, i64([2])), i64([1])), i64([0])),
                      0, "min", "value", "i64").output(0)  # the Q // 2 + 1 smallest, ascending
    middle = ops.concat([ops.divide(ops.subtract(n_q, i64([1])), i64([2])), ops.divide(n_q, i64([2]))], 0)
    median = ops.reduce_mean(ops.gather(lowest, middle, i64(0)), i64([0]), False)  # ()
    floor = ops.multiply(ops.reduce_mean(cost, i64([0, 1]), False), f32(1e-3))
    unit = ops.select(ops.greater(floor, f32(0.0)), ops.maximum(median, floor), f32(1.0))
    tau = ops.multiply(tau_ratio, unit)
    neg_inv_tau = ops.divide(f32(-1.0), tau)
    exp_min = f32(exp_floor(np.dtype(np.float32)))
    # backward map: softmax over memory rows per query patch; scores and concentration
    e_bwd = ops.multiply(ops.subtract(cost, col_min), neg_inv_tau)  # (M, Q) <= 0, 0 at each column's min
    bwd = ops.softmax(ops.maximum(e_bwd, exp_min), 0)
    bwd_max = ops.reduce_max(bwd, i64([0]), True)  # (1, Q) = 1 / the column's sum of exps
    scores = ops.reduce_sum(ops.multiply(bwd, cost), i64([0]), False)  # (Q,)
    concentration = ops.reduce_mean(bwd_max, i64([0, 1]), False)
    # forward map: softmax over query patches per memory row; the CT loss
    row_min = ops.reduce_min(cost, i64([1]), True)  # (M, 1)
    e_fwd = ops.multiply(ops.subtract(cost, row_min), neg_inv_tau)
    fwd = ops.softmax(ops.maximum(e_fwd, exp_min), 1)
    expected_row = ops.reduce_sum(ops.multiply(fwd, cost), i64([1]), False)  # (M,)
    loss = ops.add(ops.multiply(ops.reduce_mean(expected_row, i64([0]), False), f32(rho)),
                   ops.multiply(ops.reduce_mean(scores, i64([0]), False), f32(1.0 - rho)))
    # per memory row its best query patch: log p = e - log(sum of exps), unfloored
    if select_map == "backward":
        log_p = ops.add(e_bwd, ops.log(bwd_max))
    else:
        log_p = ops.add(e_fwd, ops.log(ops.reduce_max(fwd, i64([1]), True)))
    best = ops.topk(log_p, i64(1), 1, "max", "none", "i64")  # (M, 1) each
    outs = [scores, best.output(1), best.output(0), concentration, loss, tau]
    return ov.Model([o.output(0) if hasattr(o, "output") else o for o in outs], [q, m, tau_ratio],
                    f"soft_nn_transport_d{d}")


class OpenVinoTransport:
    """Callable ``(memory (M, D), queries (Q, D), tau_ratio, rho, select_map) -> SoftNNFit``, the
    signature of ``runtime.transport.soft_nn_transport`` (whose ``sq`` it does not take: the GEMM is
    inside the graph). threads: OpenVINO inference threads (the backbone engine's count)."""

    def __init__(self, threads: int | None = None) -> None:
        self._ov_mod = import_openvino()
        self.threads = threads
        self._requests = RequestCache(threads)
        self._lock = threading.Lock()
        self.description = (f"openvino {self._ov_mod.__version__.split('-')[0]} [CPU, f32, "
                            f"{threads or 'default'} threads]")

    def _request(self, d: int, rho: float, select_map: str):
        return self._requests.get((d, float(rho), select_map), lambda: _graph(self._ov_mod, d, rho, select_map), "f32")

    def __call__(self, memory: np.ndarray, queries: np.ndarray, tau_ratio: float, rho: float = 0.5,
                 select_map: str = "backward") -> SoftNNFit:
        m, q = np.ascontiguousarray(memory, np.float32), np.ascontiguousarray(queries, np.float32)
        if q.ndim != 2 or m.ndim != 2 or q.shape[1] != m.shape[1] or not (len(q) and len(m)):
            raise ValueError(f"transport: memory {m.shape} and queries {q.shape} must be (M, D) and (Q, D), "
                             "M, Q >= 1")
        if select_map not in ("backward", "forward"):
            raise ValueError(f"select_map {select_map!r}: 'backward' or 'forward'")
        with self._lock:  # inputs shared, not copied: they outlive the synchronous infer
            out = self._request(q.shape[1], rho, select_map).infer(
                {0: q, 1: m, 2: np.float32(tau_ratio)}, share_inputs=True)
            scores, best, log_p, conc, loss, tau = (np.array(o) for o in out.values())  # copies
        with np.errstate(under="ignore"):
            prob = np.exp(log_p.reshape(-1))  # (M,) float32, subnormal where the reference's is
        return SoftNNFit(scores.reshape(-1).astype(np.float32), best.reshape(-1).astype(np.int64), prob,
                         float(conc), float(loss), float(tau))
