"""Nearest-neighbour distances by blocked GEMM: never an (n, m, d) tensor."""

from __future__ import annotations

import numpy as np


def sq_norms(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n,) squared row norms."""
    return np.einsum("ij,ij->i", x, x)


def sq_dists(q: np.ndarray, m: np.ndarray, m_norms: np.ndarray | None = None) -> np.ndarray:
    """q (n, d), m (k, d) -> (n, k) squared Euclidean distances, clamped at 0."""
    mn = sq_norms(m) if m_norms is None else m_norms
    d = sq_norms(q)[:, None] + mn[None, :] - 2.0 * (q @ m.T)
    return np.maximum(d, 0.0, out=d)


def nearest_sq_dist(q: np.ndarray, m: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Squared distance of each query row to its nearest memory row, and that row's index.

    q (n, d), m (k, d) float32 -> (n,) float32, (n,) int64. Blocks of ``block`` query rows bound
    the temporary to block x k floats.
    """
    mn = sq_norms(m)
    dist = np.empty(q.shape[0], np.float32)
    idx = np.empty(q.shape[0], np.int64)
    for s in range(0, q.shape[0], block):
        d = sq_dists(q[s:s + block], m, mn)
        idx[s:s + block] = np.argmin(d, axis=1)
        dist[s:s + block] = d[np.arange(d.shape[0]), idx[s:s + block]]
    return dist, idx
