"""Approximate greedy k-center coreset (PatchCore's sampler) after a fixed random projection."""

from __future__ import annotations

import functools

import numpy as np

from .knn import sq_norms


@functools.lru_cache(maxsize=8)
def random_projection(dim_in: int, dim_out: int, seed: int = 0) -> np.ndarray:
    """(dim_in, dim_out) Gaussian projection, scaled to keep squared norms on average; read-only.

    Cached: FOCT's episodic memory compresses every other frame, and drawing the (1024, 128)
    matrix each time was ~5 ms of its method step (the same seed gives the same matrix)."""
    rng = np.random.default_rng(seed)
    proj = (rng.standard_normal((dim_in, dim_out)) / np.sqrt(dim_out)).astype(np.float32)
    proj.setflags(write=False)
    return proj


def greedy_coreset(x: np.ndarray, n: int, proj_dim: int = 128, n_starts: int = 10,
                   seed: int = 0) -> np.ndarray:
    """Indices (n,) int64 of an approximate greedy k-center subset of x (N, D).

    Projects to ``proj_dim`` dims (when D is larger), starts from the mean distance to
    ``n_starts`` random points, then repeatedly takes the point farthest from the chosen set.
    Deterministic for a given seed. n >= N returns every index.
    """
    num = x.shape[0]
    if n >= num:
        return np.arange(num, dtype=np.int64)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    z = x.astype(np.float32)
    if z.shape[1] > proj_dim:
        z = z @ random_projection(z.shape[1], proj_dim, seed)
    rng = np.random.default_rng(seed)
    zn = sq_norms(z)
    starts = rng.choice(num, size=min(n_starts, num), replace=False)
    d = np.maximum(zn[:, None] + zn[starts][None, :] - 2.0 * z @ z[starts].T, 0.0)
    min_d = np.sqrt(d).mean(axis=1)
    chosen = np.empty(n, dtype=np.int64)
    di = np.empty(num, np.float32)
    for k in range(n):
        i = int(np.argmax(min_d))
        chosen[k] = i
        # einsum's own loop, not BLAS: n small matrix-vector products, each of which a threaded
        # BLAS pays a thread hand-off for (17x slower on a loaded 2-core box; issue 16 item 1)
        np.einsum("ij,j->i", z, z[i], out=di)
        np.sqrt(np.maximum(zn + zn[i] - 2.0 * di, 0.0), out=di)
        np.minimum(min_d, di, out=min_d)
    return chosen


def coreset_size(num: int, ratio: float, minimum: int = 1) -> int:
    """Number of rows kept for a coreset ratio in (0, 1]; at least ``minimum`` when num > 0."""
    if num == 0:
        return 0
    return min(num, max(minimum, int(round(num * ratio))))


def support_coreset(features: np.ndarray, ratio: float, proj_dim: int = 128, seed: int = 0) -> np.ndarray:
    """features (K, Q, D) of the support images -> (n, D) rows kept, n = coreset_size(K*Q, ratio):
    the memory PatchCore, PatchCore+ and vanilla fit."""
    x = features.reshape(-1, features.shape[-1])  # (K*Q, D)
    return x[greedy_coreset(x, coreset_size(x.shape[0], ratio), proj_dim, seed=seed)]
