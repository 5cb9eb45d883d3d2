"""One conditional-transport step of the navigator, NumPy reference: loss, gradients, scores.

    step = ct_step(memory, queries, nav, rho)      memory (M, D), queries (Q, D), nav: navigator params
    step.loss          CT loss at ``nav`` (float)
    step.grads         d loss / d param, same keys and shapes as ``nav``
    step.scores        (Q,) s_j = sum_i bwd_ij C_ij, the patch scores under the backward map
    step.concentration mean_j max_i bwd_ij (1/M: uniform transport; 1: hard nearest neighbour)
    navigator_distances(nav, memory, queries)   D (M, Q) alone (after a fit: the maps to score with)

Composed from runtime/navigator.py (forward, backward) and runtime/transport.py (cost, CT loss and
its gradient w.r.t. D): no maths of its own. ``transport.fit_navigator`` is this step plus AdamW,
repeated. The CUDA kernels (runtime/cuda/ct_step.py) have the same signature and result; they
compute C_ij = ||M_i - F_j||^2 directly per pair instead of by the GEMM expansion, so the two
agree to float32 rounding, not bit for bit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import navigator
from .transport import concentration, cost_matrix, ct_loss_grad, transport_scores


class CTStep(NamedTuple):
    loss: float
    grads: dict[str, np.ndarray]  # same keys and shapes as the navigator's params
    scores: np.ndarray  # (Q,) float32
    concentration: float


def ct_step(memory: np.ndarray, queries: np.ndarray, nav_params: dict[str, np.ndarray],
            rho: float = 0.5) -> CTStep:
    """memory (M, D), queries (Q, D) float32, navigator params (runtime/navigator.py layout) -> CTStep
    at the current params (nothing is updated)."""
    cost = cost_matrix(memory, queries)  # (M, Q)
    dist, cache = navigator.forward(nav_params, memory, queries, keep=True)  # (M, Q)
    loss, grad_d, _, bwd = ct_loss_grad(cost, dist, rho)
    grads = navigator.backward(nav_params, memory, queries, grad_d, cache)
    return CTStep(loss, grads, transport_scores(cost, bwd).astype(np.float32), concentration(bwd))


def navigator_distances(nav_params: dict[str, np.ndarray], memory: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """D (M, Q) = d_phi(M_i, F_j): ``navigator.forward`` without the activations (the CUDA version runs
    the forward kernel alone)."""
    return navigator.forward(nav_params, memory, queries)[0]
