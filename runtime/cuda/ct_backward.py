"""The backward kernel of the fused CT step: G = dL/dD from the softmax statistics, then the gradient
of every navigator parameter, into per-block partial sums (ct_kernels.py ``ct_reduce`` adds them up).

Nothing per pair was kept by the forward: each tile's z1 and z2 are recomputed (ct_layers.py).
"""

from __future__ import annotations

import functools
import math

from numba import cuda, float32

from .ct_layers import CT_TILES, SLOPE, CtTiles, layers

SIG_BACKWARD = ("void(float32[:, ::1], float32[:, ::1], float32[:, ::1], float32[:, ::1], float32[::1], int32, "
                "float32[:, ::1], float32[:, ::1], float32[::1], float32[::1], float32[::1], float32[::1], "
                "float32, float32, float32[:, ::1])")


@functools.lru_cache(maxsize=None)
def backward_kernel(tiles: CtTiles = CT_TILES):
    """``ct_backward`` for one tile geometry."""
    PI, PJ, TD, R, BK, R2 = tiles.pi, tiles.pj, tiles.td, tiles.r, tiles.bk, tiles.r2
    P = PI * PJ
    HB = TD * R
    H2P = TD * R2
    NS = R2 // R  # hidden-2 stages of HB units
    PAD = P + 1  # +1: column walks of the (k, pair) tiles hit distinct shared-memory banks
    NT = TD * TD
    lay = layers(tiles)
    sqdiff_rows, layer1, layer2_chunk = lay.sqdiff_rows, lay.layer1, lay.layer2_chunk

    @cuda.jit
    def ct_backward(mem, qry, w1x, w2x, w3x, cost_col, dist, cost, lse_row, e_row, lse_col, s_col,
                    coef_f, coef_b, part):
        """Block b walks pair tiles b, b + grid, ...; recomputes z1 and z2 (nothing per pair was kept),
        forms G = dL/dD from the softmax statistics, and adds every parameter's gradient into its own
        row ``part[b]`` (the packed layout; each element has one owner thread, so no atomics)."""
        ts = cuda.shared.array((BK, PAD), float32)
        w1s = cuda.shared.array((BK, PAD), float32)
        a1s = cuda.shared.array((HB, PAD), float32)  # a1 of the chunk, then dz1
        buf = cuda.shared.array((P, PAD), float32)  # a stage of dz2, then (x - y)^2 rows, then reductions
        gs = cuda.shared.array(P, float32)
        cs = cuda.shared.array(P, float32)  # C from the recompute: unused, the stored cost is read
        acc = cuda.local.array((R, R), float32)
        da = cuda.local.array((R, R), float32)
        acc2 = cuda.local.array((R, R2), float32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TD + tx
        b = cuda.blockIdx.x
        n_mem, d = mem.shape
        n_q = qry.shape[0]
        n_h = w1x.shape[1]
        o_w2 = (d + 1) * n_h
        o_w3 = o_w2 + n_h * H2P
        for e in range(tid, part.shape[1], NT):
            part[b, e] = float32(0.0)
        cuda.syncthreads()
        tiles_j = (n_q + PJ - 1) // PJ
        n_tiles = ((n_mem + PI - 1) // PI) * tiles_j
        for tile in range(b, n_tiles, cuda.gridDim.x):
            i0 = (tile // tiles_j) * PI
            j0 = (tile % tiles_j) * PJ
            for r in range(R):
                for c2 in range(R2):
                    acc2[r, c2] = float32(0.0)
            # phases 0..n-1 rebuild z2 chunk by chunk; phases n..2n-1 go back through the chunks (one
            # layer-1 call site: each inlined copy costs numba seconds of compile time)
            n_chunks = n_h // HB
            for it in range(2 * n_chunks):
                h0 = (it % n_chunks) * HB
                if it == n_chunks:  # z2 complete
                    # G_ij = -(rho/M) fwd_ij (C_ij - E_i) - ((1-rho)/Q) bwd_ij (C_ij - s_j); 0 off the edge
                    for p in range(tid, P, NT):
                        i = i0 + p // PJ
                        j = j0 + p % PJ
                        gv = float32(0.0)
                        if i < n_mem and j < n_q:
                            dd = dist[i, j]
                            cc = cost[i, j]
                            gv = (-coef_f * math.exp(-dd - lse_row[i]) * (cc - e_row[i])
                                  - coef_b * math.exp(-dd - lse_col[j]) * (cc - s_col[j]))
                        gs[p] = gv
                    cuda.syncthreads()
                    if tid == 0:
                        t = float32(0.0)
                        for p in range(P):
                            t += gs[p]
                        part[b, o_w3 + H2P] += t  # gb3
                    # gW3 += sum_p G_p a2[p]: each thread its own pairs, then the TD pair lanes, HB units
                    # at a time (kept out of registers: z2 already holds R x R2 of them)
                    for s in range(NS):
                        for c2 in range(R2):
                            if c2 // R == s:
                                t = float32(0.0)
                                for r in range(R):
                                    z = acc2[r, c2]
                                    t += gs[ty + TD * r] * max(z, float32(SLOPE) * z)
                                buf[ty, tx + TD * (c2 - s * R)] = t
                        cuda.syncthreads()
                        for col in range(tid, HB, NT):
                            t = float32(0.0)
                            for u in range(TD):
                                t += buf[u, col]
                            part[b, o_w3 + s * HB + col] += t
                        cuda.syncthreads()
                    for r in range(R):  # dz2 = G W3 lrelu'(z2), in place of z2
                        gp = gs[ty + TD * r]
                        for c2 in range(R2):
                            z = acc2[r, c2]
                            acc2[r, c2] = gp * w3x[tx + TD * c2] * (float32(1.0) if z > 0 else float32(SLOPE))
                layer1(mem, qry, w1x, i0, j0, h0, cost_col, ts, w1s, acc, tid, ty, tx)
                if it < n_chunks:
                    layer2_chunk(w2x, h0, cost_col, a1s, cs, acc, acc2, ty, tx)
                    continue
                for r in range(R):
                    for c in range(R):
                        z = acc[r, c]
                        a = float32(1.0) if h0 + tx + TD * c == cost_col else max(z, float32(SLOPE) * z)
                        a1s[tx + TD * c, ty + TD * r] = a
                        da[r, c] = float32(0.0)
                for s in range(NS):
                    cuda.syncthreads()  # the previous stage's readers are done with buf
                    for r in range(R):
                        for c2 in range(R2):
                            if c2 // R == s:
                                buf[ty + TD * r, tx + TD * (c2 - s * R)] = acc2[r, c2]
                    cuda.syncthreads()
                    # dA1 += dZ2[:, stage] @ W2x[chunk, stage]^T   (pairs x chunk units)
                    for hh in range(HB):
                        for r in range(R):
                            for c in range(R):
                                da[r, c] += buf[ty + TD * r, hh] * w2x[h0 + tx + TD * c, s * HB + hh]
                    # gW2x[chunk, stage] += A1^T dZ2 (units x stage), summed over the tile's pairs
                    for r in range(R):
                        for c in range(R):
                            acc[r, c] = float32(0.0)
                    for p in range(P):
                        for r in range(R):
                            for c in range(R):
                                acc[r, c] += a1s[ty + TD * r, p] * buf[p, tx + TD * c]
                    for r in range(R):
                        for c in range(R):
                            part[b, o_w2 + (h0 + ty + TD * r) * H2P + s * HB + tx + TD * c] += acc[r, c]
                cuda.syncthreads()  # a1s is about to become dz1
                for r in range(R):
                    for c in range(R):
                        # lrelu'(z1) from the thread's own a1 entry (same sign as z1): z1 need not stay live
                        v = da[r, c] * (float32(1.0) if a1s[tx + TD * c, ty + TD * r] > 0 else float32(SLOPE))
                        if h0 + tx + TD * c == cost_col:
                            v = float32(0.0)  # the cost unit is not a parameter
                        a1s[tx + TD * c, ty + TD * r] = v
                # gW1x[:, chunk] += [(x - y)^2, 1]^T dZ1, HB feature rows at a time (row D: gb1)
                for d0 in range(0, d + 1, HB):
                    cuda.syncthreads()
                    sqdiff_rows(mem, qry, i0, j0, d0, HB, buf, tid)
                    cuda.syncthreads()
                    for r in range(R):
                        for c in range(R):
                            acc[r, c] = float32(0.0)
                    for p in range(P):
                        for r in range(R):
                            for c in range(R):
                                acc[r, c] += buf[ty + TD * r, p] * a1s[tx + TD * c, p]
                    for r in range(R):
                        k = d0 + ty + TD * r
                        if k <= d:
                            for c in range(R):
                                part[b, k * n_h + h0 + tx + TD * c] += acc[r, c]
                cuda.syncthreads()

    return ct_backward
