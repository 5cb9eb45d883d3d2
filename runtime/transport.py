"""Conditional transport (CT) between memory rows and query patches, NumPy reference.

Shapes: M memory rows, Q query patches; cost C (M, Q) = ||M_i - F_j||^2; navigator distances
D (M, Q). Two maps from the same D (DESIGN.md 2.2):

    forward  fwd_ij = softmax_j(-D_ij)   each memory row spreads over the query patches
    backward bwd_ij = softmax_i(-D_ij)   each query patch spreads over the memory rows

CT loss = rho * mean_i sum_j C fwd + (1 - rho) * mean_j sum_i C bwd; score s_j = sum_i bwd_ij C_ij.
With D = C / tau the backward map is a soft nearest neighbour: ``soft_nn_scores`` is that case
fused (the CUDA kernel in runtime/cuda has the same signature and result).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from . import navigator
from .adamw import AdamWState, adamw_step
from .episodic import best_queries
from .knn import sq_dists


def cost_matrix(memory: np.ndarray, queries: np.ndarray, sq: Callable = sq_dists) -> np.ndarray:
    """memory (M, D), queries (Q, D) -> C (M, Q) squared Euclidean distances, by GEMM (``sq``: the
    compute backend's distance function, NumPy's by default).

    Computed as (Q, M) and transposed: with M a few hundred and Q ~ 1000, OpenBLAS ran the
    (Q, D) x (D, M) product ~3x faster than (M, D) x (D, Q) on the development CPU."""
    return np.ascontiguousarray(sq(queries, memory).T)


def exp_floor(dtype: np.dtype) -> float:
    """The smallest exponent ``_softmax_neg`` hands to exp: exp(floor) / Z is still a normal float
    for sums Z of up to 1e5 terms (float32: -75.8, exp = 1.2e-33; float64: -696.9).

    Why: below it exp's result, or its quotient by the sum, is a subnormal float, and on x86 every
    subnormal result or operand costs a microcode assist: np.exp (float32, AVX-512) ran ~65x slower
    on inputs in [-103.9, -87.3] than on [-80, 0], and a (M, Q) soft-NN map at 336 px has a third of
    its entries there (runtime/methods/foct.py; benchmarks/README.md "CPU engines"). Effect on any
    result: an entry that was below exp(floor) / Z of its softmax reads exp(floor) / Z instead, less
    than 1e-28 relative to the sums (>= 1) it enters."""
    return float(np.log(np.finfo(dtype).tiny * 1e5))


def _softmax_neg(d: np.ndarray, axis: int, scale: float = 1.0) -> np.ndarray:
    """softmax(-scale * d) along ``axis``, shifted by the minimum for stability, exponents floored
    at ``exp_floor`` (no subnormals); one new array."""
    e = d - d.min(axis=axis, keepdims=True)
    e *= -scale
    np.maximum(e, exp_floor(e.dtype), out=e)
    np.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def forward_map(d: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """D (M, Q) -> softmax over query patches of -scale * D, per memory row (rows sum to 1)."""
    return _softmax_neg(d, 1, scale)


def backward_map(d: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """D (M, Q) -> softmax over memory rows of -scale * D, per query patch (columns sum to 1)."""
    return _softmax_neg(d, 0, scale)


def transport_maps(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """D (M, Q) -> forward map (M, Q) (rows sum to 1), backward map (M, Q) (columns sum to 1)."""
    return _softmax_neg(d, 1), _softmax_neg(d, 0)


def backward_map_best(cost: np.ndarray, scale: float) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """cost (M, Q) -> ``backward_map(cost, scale)`` (M, Q), and per memory row its best query patch
    (M,) int64 with that probability (M,): ``episodic.best_queries`` of the map as it was before the
    exponent floor. Rows whose largest exponent is within log(1e5) of ``exp_floor`` (rows no query
    patch reaches) could have a floored entry as their argmax; they are redone in log space, so each
    pick is the unfloored softmax's argmax (also where every probability of the row underflows float32:
    the largest log-probability, probability 0) and each probability exp(log p) (subnormal or 0 there)."""
    e = cost - cost.min(axis=0, keepdims=True)
    e *= -scale
    floor = exp_floor(e.dtype)
    low = np.flatnonzero(e.max(axis=1) < floor + np.log(1e5))
    e_low = e[low]  # (n_low, Q) exponents before the floor (a copy)
    np.maximum(e, floor, out=e)
    np.exp(e, out=e)
    z = e.sum(axis=0, keepdims=True)  # (1, Q)
    e /= z
    j, p = best_queries(e)
    if low.size:  # log-probabilities e - log z: the unfloored softmax's pick, never an underflowed tie
        e_low -= np.log(z)
        j[low] = e_low.argmax(axis=1)
        with np.errstate(under="ignore"):
            p[low] = np.exp(e_low[np.arange(low.size), j[low]])
    return e, (j, p)


class SoftNNFit(NamedTuple):
    """One soft-nearest-neighbour transport of a query against memory rows (FOCT's edge step)."""

    scores: np.ndarray  # (Q,) float32 s_j = sum_i bwd_ij C_ij
    best_query: np.ndarray  # (M,) int64 per memory row its best query patch under the selection map
    best_prob: np.ndarray  # (M,) float32 that patch's probability
    concentration: float  # mean_j max_i bwd_ij
    ct_loss: float  # rho * mean_i sum_j C fwd + (1 - rho) * mean_j s_j
    tau: float  # tau_ratio x nn_cost_scale(C)


def soft_nn_transport(memory: np.ndarray, queries: np.ndarray, tau_ratio: float, rho: float = 0.5,
                      select_map: str = "backward", sq: Callable = sq_dists) -> SoftNNFit:
    """memory (M, D), queries (Q, D) -> SoftNNFit: the navigator at D = C / tau without an MLP, tau =
    tau_ratio x the median nearest cost of this query; both maps of C / tau, the scores under the
    backward one, each memory row's best query patch under ``select_map`` ("backward" | "forward"),
    the concentration and the CT loss. The NumPy reference of the compute backends'
    ``soft_nn_transport`` (runtime/engines/openvino_transport.py: one OpenVINO graph, same numbers
    to float rounding). ``sq``: the distance GEMM (``cost_matrix``)."""
    cost = cost_matrix(memory, queries, sq)  # (M, Q)
    tau = tau_ratio * nn_cost_scale(cost)
    return fit_from_maps(cost, cost, 1.0 / tau, tau, rho, select_map)


def fit_from_maps(cost: np.ndarray, d: np.ndarray, scale: float, tau: float, rho: float = 0.5,
                  select_map: str = "backward") -> SoftNNFit:
    """cost (M, Q), and the distances the two maps are softmaxes of, -scale * d (M, Q): the cost itself at
    scale 1 / tau (the soft nearest neighbour) or a fitted navigator's distances at scale 1 -> SoftNNFit
    (scores under the backward map, best query patch per memory row under ``select_map``,
    concentration, CT loss; ``tau`` recorded)."""
    (bwd, best), fwd = backward_map_best(d, scale), forward_map(d, scale)  # (M, Q) each
    if select_map == "forward":
        best = best_queries(fwd)
    return SoftNNFit(transport_scores(cost, bwd).astype(np.float32), best[0], best[1].astype(np.float32),
                     concentration(bwd), ct_loss(cost, fwd, bwd, rho), tau)


def transport_scores(cost: np.ndarray, bwd: np.ndarray) -> np.ndarray:
    """s_j = sum_i bwd_ij C_ij: the expected cost of query patch j under the backward map -> (Q,)."""
    return np.einsum("ij,ij->j", bwd, cost)


def ct_loss(cost: np.ndarray, fwd: np.ndarray, bwd: np.ndarray, rho: float = 0.5) -> float:
    """rho * mean_i sum_j C fwd + (1 - rho) * mean_j sum_i C bwd (the authors' code)."""
    return float(rho * np.einsum("ij,ij->i", fwd, cost).mean()
                 + (1.0 - rho) * np.einsum("ij,ij->j", bwd, cost).mean())


def ct_loss_grad(cost: np.ndarray, d: np.ndarray, rho: float = 0.5):
    """CT loss and its gradient w.r.t. D.

    For a softmax p = softmax(-d) over an axis, d(sum C p)/d d = -p * (C - sum C p), so
    dL/dD_ij = -(rho / M) fwd_ij (C_ij - E_i) - ((1 - rho) / Q) bwd_ij (C_ij - s_j)
    with E_i, s_j the forward and backward expected costs.
    -> loss (float), grad (M, Q), fwd (M, Q), bwd (M, Q)
    """
    m, q = cost.shape
    fwd, bwd = transport_maps(d)
    e_row = np.einsum("ij,ij->i", fwd, cost)  # (M,)
    s_col = np.einsum("ij,ij->j", bwd, cost)  # (Q,)
    loss = float(rho * e_row.mean() + (1.0 - rho) * s_col.mean())
    grad = -(rho / m) * fwd * (cost - e_row[:, None]) - ((1.0 - rho) / q) * bwd * (cost - s_col[None, :])
    return loss, grad, fwd, bwd


def concentration(bwd: np.ndarray) -> float:
    """Mean over query patches of the largest backward-map probability (1/M when uniform, 1 when
    every patch goes to one memory row: a hard nearest neighbour)."""
    return float(bwd.max(axis=0).mean())


def nn_cost_scale(cost: np.ndarray) -> float:
    """Median over query patches of the nearest-neighbour cost min_i C_ij (the temperature's
    unit), floored at 1e-3 x the mean cost so an exact match of every patch cannot give tau = 0."""
    med = float(np.median(cost.min(axis=0)))
    floor = 1e-3 * float(cost.mean())
    return max(med, floor) if floor > 0 else 1.0


def soft_nn_from_cost(cost: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """cost (M, Q) -> scores (Q,), max_prob (Q,) of P = softmax_i(-C / tau) per column."""
    p = backward_map(cost, 1.0 / tau)
    return transport_scores(cost, p), p.max(axis=0)


def soft_nn_scores(memory: np.ndarray, queries: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """memory (m, d), queries (q, d) -> scores (q,), max_prob (q,).

    C_ij = ||M_i - F_j||^2, P = softmax_i(-C / tau) per query column, scores_j = sum_i P_ij C_ij,
    max_prob_j = max_i P_ij. Reference of the fused CUDA kernel (same name and signature).
    As tau -> 0 the score tends to the nearest-neighbour distance (PatchCore).
    """
    return soft_nn_from_cost(cost_matrix(memory, queries), tau)


def fit_navigator(cost: np.ndarray, memory: np.ndarray, queries: np.ndarray, nav: dict[str, np.ndarray],
                  steps: int, lr: float, weight_decay: float = 0.01, rho: float = 0.5) -> list[float]:
    """Minimise the CT loss over the navigator ``nav`` in place: ``steps`` AdamW steps (torch's
    defaults but lr and weight decay). cost (M, Q), memory (M, D), queries (Q, D).
    -> the loss before each step."""
    state = AdamWState.zeros_like(nav)
    losses = []
    for _ in range(steps):
        d, cache = navigator.forward(nav, memory, queries, keep=True)
        loss, grad_d, _, _ = ct_loss_grad(cost, d, rho)
        adamw_step(nav, navigator.backward(nav, memory, queries, grad_d, cache), state, lr,
                   weight_decay=weight_decay)
        losses.append(loss)
    return losses
