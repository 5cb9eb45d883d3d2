"""Fused soft nearest-neighbour transport score on the GPU (FOCT ``edge`` preset, step 0).

For memory M (m, d), queries F (q, d) and a temperature tau, with C_ij = ||M_i - F_j||^2:

    p_ij = softmax_i(-C_ij / tau)        backward map, over memory, per query column j
    score_j = sum_i p_ij * C_ij          expected cost under the backward map
    max_prob_j = max_i p_ij = 1 / Z_j    transport concentration (1/m when uniform)

The kernels (``soft_nn_kernels.py``) fold every tile of C straight into a streaming softmax per
query: no (m, q) matrix and never an (m, q, d) tensor. Here, the host side: memory rows are split
over the grid's second axis so that one image fills the GPU, and the per-split partials merged.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from .soft_nn_kernels import TILES, TPB_MERGE, TPB_NORM, Tiles, kernels

__all__ = ["TILES", "Tiles", "split_rows", "sq_norms_device", "soft_nn_scores_device", "soft_nn_scores"]

TARGET_BLOCKS = 256  # enough blocks to fill a large GPU several times over


def split_rows(n_mem: int, n_q: int, tiles: Tiles = TILES, target_blocks: int = TARGET_BLOCKS) -> int:
    """Memory rows per split (a multiple of the tile) so that the grid has about ``target_blocks`` blocks."""
    q_tiles, m_tiles = -(-n_q // tiles.b), -(-n_mem // tiles.b)
    n_split = max(1, min(m_tiles, -(-target_blocks // q_tiles)))
    return -(-m_tiles // n_split) * tiles.b


def sq_norms_device(d_x, stream=0, tiles: Tiles = TILES):
    """(n, d) device array -> (n,) device array of squared row norms."""
    out = cuda.device_array(d_x.shape[0], np.float32, stream=stream)
    kernels(tiles).norms[-(-d_x.shape[0] // TPB_NORM), TPB_NORM, stream](d_x, out)
    return out


def soft_nn_scores_device(d_mem, d_mem_norm, d_qry, tau: float, stream=0, tiles: Tiles = TILES,
                          target_blocks: int = TARGET_BLOCKS):
    """Device arrays in and out: memory (m, d), its norms (m,), queries (q, d) -> scores (q,), max_prob (q,).

    The memory and its norms stay on the device between images; only the queries change.
    """
    k = kernels(tiles)
    n_mem, n_q = d_mem.shape[0], d_qry.shape[0]
    d_qn = sq_norms_device(d_qry, stream, tiles)
    rows = split_rows(n_mem, n_q, tiles, target_blocks)
    n_split = -(-n_mem // rows)
    pmx, pz, ps = (cuda.device_array((n_split, n_q), np.float32, stream=stream) for _ in range(3))
    grid = (-(-n_q // tiles.b), n_split)
    k.partial[grid, (tiles.td, tiles.td), stream](d_mem, d_mem_norm, d_qry, d_qn, np.float32(1.0 / tau),
                                                  np.int32(rows), pmx, pz, ps)
    score = cuda.device_array(n_q, np.float32, stream=stream)
    max_prob = cuda.device_array(n_q, np.float32, stream=stream)
    k.merge[-(-n_q // TPB_MERGE), TPB_MERGE, stream](pmx, pz, ps, score, max_prob)
    return score, max_prob


def soft_nn_scores(memory: np.ndarray, queries: np.ndarray, tau: float, *, tiles: Tiles = TILES,
                   target_blocks: int = TARGET_BLOCKS) -> tuple[np.ndarray, np.ndarray]:
    """memory (m, d), queries (q, d) float32, tau > 0 -> scores (q,), max_prob (q,) float32 host arrays."""
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError(f"tau must be a positive finite temperature, got {tau}")
    memory = np.ascontiguousarray(memory, np.float32)
    queries = np.ascontiguousarray(queries, np.float32)
    if memory.shape[0] == 0 or memory.ndim != 2 or queries.ndim != 2 or memory.shape[1] != queries.shape[1]:
        raise ValueError(f"memory {memory.shape} and queries {queries.shape}: need (m > 0, d) and (q, d)")
    stream = cuda.stream()
    d_mem = cuda.to_device(memory, stream=stream)
    d_qry = cuda.to_device(queries, stream=stream)
    d_mn = sq_norms_device(d_mem, stream, tiles)
    score, max_prob = soft_nn_scores_device(d_mem, d_mn, d_qry, tau, stream, tiles, target_blocks)
    out = score.copy_to_host(stream=stream), max_prob.copy_to_host(stream=stream)
    stream.synchronize()
    return out
