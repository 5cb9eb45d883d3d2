"""The fused CT-step kernels: navigator forward and backward on tiles of (memory, query) pairs.

Never built: the (M, Q, D) tensor of squared differences or any (M, Q, H) activation. What is
written to global memory: D and C (M, Q), row and column softmax statistics, and per-block
gradient partial sums. ``kernels(tiles)`` gives the six launches of a step (runtime/cuda/ct_step.py):

    forward    D, C per tile of pairs                 row_stats / col_stats   the two maps' statistics
    backward   gradient partials (ct_backward.py)     reduce   their sum      loss   one fit step's loss

The tile geometry, the packed parameter layout and the layer routines are in ct_layers.py.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

from numba import cuda, float32

from .ct_backward import SIG_BACKWARD, backward_kernel
from .ct_layers import CT_TILES, SLOPE, CtTiles, layers
from .lse import NEG_INF, block_lse, block_sum, lse_push

SIG_FORWARD = ("void(float32[:, ::1], float32[:, ::1], float32[:, ::1], float32[:, ::1], float32[::1], "
               "float32[::1], int32, float32[:, ::1], float32[:, ::1])")
SIG_ROW_STATS = "void(float32[:, ::1], float32[:, ::1], float32[::1], float32[::1])"
SIG_COL_STATS = "void(float32[:, ::1], float32[:, ::1], float32[::1], float32[::1], float32[::1])"
SIG_REDUCE = "void(float32[:, ::1], float32[::1])"
SIG_LOSS = "void(float32[::1], float32[::1], float32, float32[::1], int32)"
__all__ = ["CT_TILES", "SIG_BACKWARD", "SLOPE", "CtTiles", "kernels"]


@functools.lru_cache(maxsize=None)
def kernels(tiles: CtTiles = CT_TILES) -> SimpleNamespace:
    """The kernels for one tile geometry (numba freezes the closure's ints as constants)."""
    PI, PJ, TD, R, BK, R2, TPB = tiles.pi, tiles.pj, tiles.td, tiles.r, tiles.bk, tiles.r2, tiles.tpb
    P = PI * PJ
    HB = TD * R
    PAD = P + 1  # +1: column walks of the (k, pair) tiles hit distinct shared-memory banks
    NT = TD * TD
    lay = layers(tiles)
    layer1, layer2_chunk = lay.layer1, lay.layer2_chunk

    @cuda.jit
    def ct_forward(mem, qry, w1x, w2x, w3x, b3, cost_col, dist, cost):
        """Block (bx, by): pairs of memory rows [by*PI, +PI) x queries [bx*PJ, +PJ) -> dist, cost (M, Q)."""
        ts = cuda.shared.array((BK, PAD), float32)
        w1s = cuda.shared.array((BK, PAD), float32)
        a1s = cuda.shared.array((HB, PAD), float32)
        red = cuda.shared.array((TD, PAD), float32)
        cs = cuda.shared.array(P, float32)
        acc = cuda.local.array((R, R), float32)
        acc2 = cuda.local.array((R, R2), float32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TD + tx
        i0 = cuda.blockIdx.y * PI
        j0 = cuda.blockIdx.x * PJ
        for r in range(R):
            for c2 in range(R2):
                acc2[r, c2] = float32(0.0)
        for h0 in range(0, w1x.shape[1], HB):
            layer1(mem, qry, w1x, i0, j0, h0, cost_col, ts, w1s, acc, tid, ty, tx)
            layer2_chunk(w2x, h0, cost_col, a1s, cs, acc, acc2, ty, tx)
        for r in range(R):
            s = float32(0.0)
            for c2 in range(R2):
                z = acc2[r, c2]
                s += max(z, float32(SLOPE) * z) * w3x[tx + TD * c2]
            red[tx, ty + TD * r] = s
        cuda.syncthreads()
        n_mem, n_q = dist.shape
        for p in range(tid, P, NT):
            i = i0 + p // PJ
            j = j0 + p % PJ
            if i < n_mem and j < n_q:
                t = b3[0]
                for u in range(TD):
                    t += red[u, p]
                dist[i, j] = t
                cost[i, j] = cs[p]

    @cuda.jit
    def ct_row_stats(dist, cost, lse_row, e_row):
        """Forward map, one block per memory row i: lse_i = log sum_j exp(-D_ij), E_i = sum_j fwd_ij C_ij."""
        smax = cuda.shared.array(TPB, float32)
        ssum = cuda.shared.array(TPB, float32)
        i = cuda.blockIdx.x
        t = cuda.threadIdx.x
        mx = NEG_INF
        s = float32(0.0)
        for j in range(t, dist.shape[1], TPB):
            mx, s = lse_push(mx, s, -dist[i, j])
        smax[t] = mx
        ssum[t] = s
        block_lse(smax, ssum, t, TPB)
        lse = smax[0] + math.log(ssum[0])
        cuda.syncthreads()  # every thread has read slot 0 before it is reused
        acc = float32(0.0)
        for j in range(t, dist.shape[1], TPB):
            acc += math.exp(-dist[i, j] - lse) * cost[i, j]
        ssum[t] = acc
        block_sum(ssum, t, TPB)
        if t == 0:
            lse_row[i] = lse
            e_row[i] = ssum[0]

    @cuda.jit
    def ct_col_stats(dist, cost, lse_col, s_col, max_prob):
        """Backward map, one thread per query j (coalesced across j): lse_j, s_j = sum_i bwd_ij C_ij,
        max_i bwd_ij."""
        j = cuda.grid(1)
        if j < dist.shape[1]:
            mx = NEG_INF
            s = float32(0.0)
            for i in range(dist.shape[0]):
                mx, s = lse_push(mx, s, -dist[i, j])
            lse = mx + math.log(s)
            acc = float32(0.0)
            for i in range(dist.shape[0]):
                acc += math.exp(-dist[i, j] - lse) * cost[i, j]
            lse_col[j] = lse
            s_col[j] = acc
            max_prob[j] = float32(1.0) / s

    @cuda.jit
    def ct_reduce(part, out):
        """out[e] = sum_b part[b, e]: one thread per parameter, coalesced over e."""
        e = cuda.grid(1)
        if e < out.shape[0]:
            s = float32(0.0)
            for b in range(part.shape[0]):
                s += part[b, e]
            out[e] = s

    @cuda.jit
    def ct_loss(e_row, s_col, rho, losses, slot):
        """losses[slot] = rho mean_i E_i + (1 - rho) mean_j s_j; one block."""
        buf = cuda.shared.array(TPB, float32)
        t = cuda.threadIdx.x
        a = float32(0.0)
        for i in range(t, e_row.shape[0], TPB):
            a += e_row[i]
        c = float32(0.0)
        for j in range(t, s_col.shape[0], TPB):
            c += s_col[j]
        buf[t] = rho * a / float32(e_row.shape[0]) + (float32(1.0) - rho) * c / float32(s_col.shape[0])
        block_sum(buf, t, TPB)
        if t == 0:
            losses[slot] = buf[0]

    return SimpleNamespace(forward=ct_forward, row_stats=ct_row_stats, col_stats=ct_col_stats,
                           backward=backward_kernel(tiles), reduce=ct_reduce, loss=ct_loss)
