"""The fused soft nearest-neighbour kernels (FOCT ``edge`` preset, step 0), for one tile geometry.

What they compute, and how the host drives them: ``soft_nn.py``. ``partial`` computes C tile by
tile as ||M_i||^2 + ||F_j||^2 - 2 M_i.F_j from shared-memory tiles of M and F (default: a 64 x 64
block tile, 16-deep k-chunks, 256 threads owning 4 x 4 outputs each) and folds every C tile
straight into a streaming softmax per query (running max logit, Z, and the sum of weight * C);
``merge`` combines the per-split partials exactly; ``norms`` gives squared row norms. The tile
geometry is a parameter only so that the CUDA simulator can test the same code with small blocks;
production uses ``TILES``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import SimpleNamespace

from numba import cuda, float32

from .lse import NEG_INF

TPB_NORM = 128
TPB_MERGE = 128

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
