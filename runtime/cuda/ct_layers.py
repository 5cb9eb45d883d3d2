"""The CT kernels' tile geometry, parameter layout and the two layer routines they share.

Parameter layout (packed once on the host, runtime/cuda/ct_step.py): biases ride as an extra input
of ones, so every layer is one GEMM and the bias gradient is one more row of the weight gradient.

    W1x (D + 1, H1P)  rows 0..D-1 = W1, row D = b1; H1P = H1 + 1 rounded up to the tile's HB
    W2x (H1P, H2P)    rows 0..H1-1 = W2, row H1 = b2; H2P = the tile's hidden-2 width
    W3x (H2P,)        W3[:, 0];  b3 (1,)
    zeros elsewhere: zero-padded units stay exactly zero under AdamW (zero gradient, zero moments)

Column ``cost_col`` = H1 of layer 1 is the "cost unit": its weights are taken as 1 (rows < D), so
its pre-activation is C_ij = sum_d (x_id - y_jd)^2, computed by the same GEMM; its activation is
1, the bias input of layer 2 (so the gradient row H1 of W2x is the b2 gradient).

Block tile: P = pi x pj pairs (pi memory rows x pj queries) by HB hidden units, td x td threads,
each owning r pairs (ty + td*k) x r units (tx + td*k); layer 2 keeps z2 (r x r2 per thread) in
registers, which bounds hidden2 by td*r2 (256 in production). All arithmetic is float32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace

from numba import cuda, float32

SLOPE = 0.01  # torch.nn.LeakyReLU default, as runtime/navigator.py


@dataclass(frozen=True)
class CtTiles:
    """pi x pj pairs per tile (= td*r), td x td threads, r x r outputs per thread, bk-deep feature
    chunks, r2 hidden-2 units per thread (hidden2 <= td*r2); tpb (a power of two): threads of the
    statistics, loss and reduction kernels. Only the simulator tests use other values than these."""

    pi: int = 8
    pj: int = 8
    td: int = 16
    r: int = 4
    bk: int = 16
    r2: int = 16
    tpb: int = 128

    def __post_init__(self) -> None:
        if self.pi * self.pj != self.td * self.r or self.r2 % self.r or self.tpb & (self.tpb - 1):
            raise ValueError(f"{self}: need pi*pj == td*r (pairs = hidden units per tile), r2 a multiple of r "
                             f"and tpb a power of two")

    @property
    def pairs(self) -> int:
        return self.pi * self.pj

    @property
    def hb(self) -> int:
        """Hidden-1 units per chunk (and feature rows per gradient sub-chunk)."""
        return self.td * self.r

    @property
    def h2p(self) -> int:
        return self.td * self.r2


CT_TILES = CtTiles()


@functools.lru_cache(maxsize=None)
def layers(tiles: CtTiles = CT_TILES) -> SimpleNamespace:
    """sqdiff_rows, layer1 and layer2_chunk for one geometry: numba-inlined device functions (a separately compiled
    device function would need a GPU to learn its architecture, so compile_ptx could not build it)."""
    PJ, TD, R, BK, R2 = tiles.pj, tiles.td, tiles.r, tiles.bk, tiles.r2
    P = tiles.pairs
    HB = TD * R
    NT = TD * TD

    @cuda.jit(device=True, inline="always")
    def sqdiff_rows(mem, qry, i0, j0, k0, width, buf, tid):
        """buf[kk, p] = row k0 + kk of the layer-1 input [(x - y)^2, 1] for pair p of the tile at (i0, j0),
        kk < width: (x_ik - y_jk)^2 for k < D, 1 at k = D (the bias input), 0 beyond and off the edge."""
        n_mem, d = mem.shape
        n_q = qry.shape[0]
        for e in range(tid, width * P, NT):  # consecutive threads: consecutive features of one row
            kk = e % width
            p = e // width
            k = k0 + kk
            i = i0 + p // PJ
            j = j0 + p % PJ
            v = float32(0.0)
            if k < d:
                if i < n_mem and j < n_q:
                    v = mem[i, k] - qry[j, k]
                    v = v * v
            elif k == d:
                v = float32(1.0)
            buf[kk, p] = v

    @cuda.jit(device=True, inline="always")
    def layer1(mem, qry, w1x, i0, j0, h0, cost_col, ts, w1s, acc, tid, ty, tx):
        """acc[r, c] = pre-activation of unit h0 + tx + TD*c for pair ty + TD*r of the tile at (i0, j0):
        [(x - y)^2, 1] @ W1x, the (x - y)^2 operand made in shared memory chunk by chunk."""
        d = mem.shape[1]
        for r in range(R):
            for c in range(R):
                acc[r, c] = float32(0.0)
        for k0 in range(0, d + 1, BK):  # d + 1: the ones row that adds b1
            sqdiff_rows(mem, qry, i0, j0, k0, BK, ts, tid)
            for e in range(tid, BK * HB, NT):
                kk = e // HB
                c = e % HB
                k = k0 + kk
                col = h0 + c
                v = float32(0.0)
                if col == cost_col:
                    if k < d:
                        v = float32(1.0)
                elif k <= d:
                    v = w1x[k, col]
                w1s[kk, c] = v
            cuda.syncthreads()
            for kk in range(BK):
                for r in range(R):
                    for c in range(R):
                        acc[r, c] += ts[kk, ty + TD * r] * w1s[kk, tx + TD * c]
            cuda.syncthreads()

    @cuda.jit(device=True, inline="always")
    def layer2_chunk(w2x, h0, cost_col, a1s, cs, acc, acc2, ty, tx):
        """Fold layer 1's chunk h0 (pre-activations in acc) into acc2[r, c2] += a1 @ W2x[chunk], the z2 of
        pair ty + TD*r, unit tx + TD*c2; cs[p] = C of pair p when the chunk holds the cost unit."""
        for r in range(R):
            for c in range(R):
                z = acc[r, c]
                if h0 + tx + TD * c == cost_col:
                    cs[ty + TD * r] = z
                    a = float32(1.0)  # the bias input of layer 2
                else:
                    a = max(z, float32(SLOPE) * z)
                a1s[tx + TD * c, ty + TD * r] = a
        cuda.syncthreads()
        for kk in range(HB):
            for r in range(R):
                for c2 in range(R2):
                    acc2[r, c2] += a1s[kk, ty + TD * r] * w2x[h0 + kk, tx + TD * c2]
        cuda.syncthreads()

    return SimpleNamespace(sqdiff_rows=sqdiff_rows, layer1=layer1, layer2_chunk=layer2_chunk)
