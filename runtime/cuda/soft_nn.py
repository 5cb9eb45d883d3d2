"""Fused soft nearest-neighbour transport score on the GPU (FOCT ``edge`` preset, step 0).

For memory M (m, d), queries F (q, d) and a temperature tau, with C_ij = ||M_i - F_j||^2:

    p_ij = softmax_i(-C_ij / tau)        backward map, over memory, per query column j
    score_j = sum_i p_ij * C_ij          expected cost under the backward map
    max_prob_j = max_i p_ij = 1 / Z_j    transport concentration (1/m when uniform)

The ``partial`` kernel computes C tile by tile as ||M_i||^2 + ||F_j||^2 - 2 M_i.F_j from shared-
memory tiles of M and F (default: a 64 x 64 block tile, 16-deep k-chunks, 256 threads owning 4 x 4
outputs each) and folds every C tile straight into a streaming softmax per query (running max
logit, Z, and the sum of weight * C): no (m, q) matrix and never an (m, q, d) tensor. Memory rows
are split over the grid's second axis so that one image fills the GPU; ``merge`` combines the
per-split partials exactly. The tile geometry is a parameter only so that the CUDA simulator can
test the same code with small blocks; production uses ``TILES``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from numba import cuda, float32

from .lse import NEG_INF

TPB_NORM = 128
TPB_MERGE = 128
TARGET_BLOCKS = 256  # enough blocks to fill a large GPU several times over

SIG_PARTIAL = ("void(float32[:, ::1], float32[::1], float32[:, ::1], float32[::1], float32, int32, "
               "float32[:, ::1], float32[:, ::1], float32[:, ::1])")
SIG_MERGE = "void(float32[:, ::1], float32[:, ::1], float32[:, ::1], float32[::1], float32[::1])"
SIG_NORMS = "void(float32[:, ::1], float32[::1])"


@dataclass(frozen=True)
class Tiles:
    """Block tile: ``b`` memory rows x ``b`` queries, ``bk``-deep k-chunks, (td, td) threads."""

    b: int = 64
    bk: int = 16
    td: int = 16

    def __post_init__(self) -> None:
        if self.b % self.td or (self.b * self.bk) % (self.td * self.td):
            raise ValueError(f"{self}: b must be a multiple of td, and b*bk of td*td")


TILES = Tiles()


@functools.lru_cache(maxsize=None)
def kernels(tiles: Tiles = TILES) -> SimpleNamespace:
    """The three kernels for one tile geometry (numba freezes the closure's ints as constants)."""
    B, BK, TD = tiles.b, tiles.bk, tiles.td
    R = B // TD  # rows (and columns) owned per thread
    PAD = B + 1  # +1: the transposed tile stores hit distinct shared-memory banks
    STAGE = B * BK // (TD * TD)  # elements of each tile staged per thread per chunk

    @cuda.jit
    def row_sq_norms(x, out):
        """out[i] = sum_k x[i, k]^2; one thread per row (O((m + q) d), negligible beside the tiles)."""
        i = cuda.grid(1)
        if i < x.shape[0]:
            s = float32(0.0)
            for k in range(x.shape[1]):
                s += x[i, k] * x[i, k]
            out[i] = s

    @cuda.jit
    def soft_nn_partial(mem, mem_norm, qry, qry_norm, inv_tau, rows_per_split, pmx, pz, ps):
        """Block (bx, by): queries [bx*B, +B) against memory rows [by*rows_per_split, +rows_per_split).

        Writes the split's partial softmax per query into (n_split, q) arrays: pmx (max logit),
        pz (sum of exp(logit - pmx)), ps (sum of exp(logit - pmx) * C).
        """
        sm = cuda.shared.array((BK, PAD), float32)  # k-major: sm[k, i]
        sf = cuda.shared.array((BK, PAD), float32)
        red_m = cuda.shared.array((TD, B), float32)
        red_z = cuda.shared.array((TD, B), float32)
        red_s = cuda.shared.array((TD, B), float32)
        acc = cuda.local.array((R, R), float32)
        av = cuda.local.array(R, float32)
        bv = cuda.local.array(R, float32)
        mx = cuda.local.array(R, float32)
        z = cuda.local.array(R, float32)
        sc = cuda.local.array(R, float32)

        tx = cuda.threadIdx.x  # query lane: columns tx + TD*c (consecutive lanes, no bank conflicts)
        ty = cuda.threadIdx.y  # memory lane: rows ty + TD*r
        tid = ty * TD + tx
        n_mem, d = mem.shape
        n_q = qry.shape[0]
        q0 = cuda.blockIdx.x * B
        lo = cuda.blockIdx.y * rows_per_split
        hi = min(n_mem, lo + rows_per_split)
        for c in range(R):
            mx[c] = NEG_INF
            z[c] = float32(0.0)
            sc[c] = float32(0.0)

        for i0 in range(lo, hi, B):
            for r in range(R):
                for c in range(R):
                    acc[r, c] = float32(0.0)
            for k0 in range(0, d, BK):
                # BK consecutive threads read BK consecutive floats of one row (coalesced)
                for u in range(STAGE):
                    e = tid + u * TD * TD
                    row = e // BK
                    kk = e % BK
                    gk = k0 + kk
                    sm[kk, row] = mem[i0 + row, gk] if (i0 + row < hi and gk < d) else float32(0.0)
                    sf[kk, row] = qry[q0 + row, gk] if (q0 + row < n_q and gk < d) else float32(0.0)
                cuda.syncthreads()
                for kk in range(BK):
                    for r in range(R):
                        av[r] = sm[kk, ty + TD * r]
                    for c in range(R):
                        bv[c] = sf[kk, tx + TD * c]
                    for r in range(R):
                        for c in range(R):
                            acc[r, c] += av[r] * bv[c]
                cuda.syncthreads()
            # fold this tile's costs into each owned column's streaming softmax
            for r in range(R):
                gi = i0 + ty + TD * r
                if gi < hi:
                    for c in range(R):
                        gj = q0 + tx + TD * c
                        if gj < n_q:
                            cost = max(mem_norm[gi] + qry_norm[gj] - float32(2.0) * acc[r, c], float32(0.0))
                            logit = -cost * inv_tau
                            if logit > mx[c]:
                                scale = math.exp(mx[c] - logit)  # exp(-inf) = 0 on a column's first row
                                z[c] = z[c] * scale + float32(1.0)
                                sc[c] = sc[c] * scale + cost
                                mx[c] = logit
                            else:
                                w = math.exp(logit - mx[c])
                                z[c] += w
                                sc[c] += w * cost

        # merge the TD memory lanes of each column; one thread per column writes the partial
        for c in range(R):
            red_m[ty, tx + TD * c] = mx[c]
            red_z[ty, tx + TD * c] = z[c]
            red_s[ty, tx + TD * c] = sc[c]
        cuda.syncthreads()
        for col in range(tid, B, TD * TD):
            if q0 + col < n_q:
                m_all = NEG_INF
                for r in range(TD):
                    m_all = max(m_all, red_m[r, col])
                zt = float32(0.0)
                st = float32(0.0)
                for r in range(TD):
                    if red_m[r, col] > NEG_INF:  # a lane that saw no row holds (-inf, 0, 0)
                        w = math.exp(red_m[r, col] - m_all)
                        zt += w * red_z[r, col]
                        st += w * red_s[r, col]
                pmx[cuda.blockIdx.y, q0 + col] = m_all
                pz[cuda.blockIdx.y, q0 + col] = zt
                ps[cuda.blockIdx.y, q0 + col] = st

    @cuda.jit
    def soft_nn_merge(pmx, pz, ps, score, max_prob):
        """Merge the (n_split, q) partials: score = S / Z, max_prob = 1 / Z; one thread per query."""
        j = cuda.grid(1)
        if j < score.shape[0]:
            m_all = NEG_INF
            for b in range(pmx.shape[0]):
                m_all = max(m_all, pmx[b, j])
            zt = float32(0.0)
            st = float32(0.0)
            for b in range(pmx.shape[0]):
                if pmx[b, j] > NEG_INF:
                    w = math.exp(pmx[b, j] - m_all)
                    zt += w * pz[b, j]
                    st += w * ps[b, j]
            score[j] = st / zt
            max_prob[j] = float32(1.0) / zt

    return SimpleNamespace(partial=soft_nn_partial, merge=soft_nn_merge, norms=row_sq_norms)


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
