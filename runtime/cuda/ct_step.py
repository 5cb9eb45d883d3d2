"""The CT step and the navigator fit on the GPU: the contracts of ``runtime/ct_step.py`` (``ct_step``,
``navigator_distances``) and ``runtime/transport.py fit_navigator``, run by the kernels of ``ct_kernels.py``.

One step is six launches, all on one stream, nothing copied back in between:

    forward      D, C (M, Q) per tile of pairs                       grid (Q/pj, M/pi)
    row_stats    forward map: lse_i, E_i = sum_j fwd_ij C_ij          one block per memory row
    col_stats    backward map: lse_j, s_j, max_i bwd_ij              one thread per query
    backward     G = dL/dD on the fly, per-block gradient partials   ``blocks`` blocks over the tiles
    reduce       sum of the partials -> the packed gradient
    loss         rho mean E + (1 - rho) mean s (fit only: one slot per step)

``fit_navigator`` keeps the packed parameters, the AdamW moments and the workspace on the device
for all its steps (AdamW is runtime/cuda/adamw.py's kernel on the packed vector: the update is
element-wise, so packing changes nothing) and copies the parameters and losses back once.
Executed FLOPs per step are ``step_flops`` (4 x the forward: the backward recomputes z1 and z2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import cuda

from ..ct_step import CTStep
from . import probe
from .adamw import adamw_step_device
from .ct_kernels import CT_TILES, CtTiles, kernels


@dataclass(frozen=True)
class Layout:
    """Offsets of the packed parameter vector (see ct_layers.py): W1x, W2x, W3x, b3."""

    d: int
    h1: int
    h2: int
    h1p: int
    h2p: int

    @classmethod
    def of(cls, nav: dict[str, np.ndarray], tiles: CtTiles) -> "Layout":
        d, h1 = nav["W1"].shape
        h2 = nav["W2"].shape[1]
        if h2 > tiles.h2p:
            raise ValueError(f"navigator hidden2 = {h2} exceeds the CT kernel's {tiles.h2p} (tiles.r2 = {tiles.r2}); "
                             f"use a narrower navigator or CtTiles(r2={-(-h2 // tiles.td)})")
        return cls(d, h1, h2, -(-(h1 + 1) // tiles.hb) * tiles.hb, tiles.h2p)

    @property
    def o_w2(self) -> int:
        return (self.d + 1) * self.h1p

    @property
    def o_w3(self) -> int:
        return self.o_w2 + self.h1p * self.h2p

    @property
    def size(self) -> int:
        return self.o_w3 + self.h2p + 1


def pack(nav: dict[str, np.ndarray], lay: Layout) -> np.ndarray:
    """Navigator params (runtime/navigator.py keys) -> the packed float32 vector (lay.size,)."""
    flat = np.zeros(lay.size, np.float32)
    w1x = flat[:lay.o_w2].reshape(lay.d + 1, lay.h1p)
    w1x[:lay.d, :lay.h1], w1x[lay.d, :lay.h1] = nav["W1"], nav["b1"]
    w2x = flat[lay.o_w2:lay.o_w3].reshape(lay.h1p, lay.h2p)
    w2x[:lay.h1, :lay.h2], w2x[lay.h1, :lay.h2] = nav["W2"], nav["b2"]
    flat[lay.o_w3:lay.o_w3 + lay.h2] = nav["W3"][:, 0]
    flat[-1] = nav["b3"][0]
    return flat


def unpack(flat: np.ndarray, lay: Layout) -> dict[str, np.ndarray]:
    """Inverse of ``pack`` (copies, in the navigator's shapes)."""
    w1x = flat[:lay.o_w2].reshape(lay.d + 1, lay.h1p)
    w2x = flat[lay.o_w2:lay.o_w3].reshape(lay.h1p, lay.h2p)
    return {"W1": w1x[:lay.d, :lay.h1].copy(), "b1": w1x[lay.d, :lay.h1].copy(),
            "W2": w2x[:lay.h1, :lay.h2].copy(), "b2": w2x[lay.h1, :lay.h2].copy(),
            "W3": flat[lay.o_w3:lay.o_w3 + lay.h2, None].copy(), "b3": flat[-1:].copy()}


def step_flops(m: int, q: int, d: int, hidden: tuple[int, int]) -> float:
    """FLOPs the kernels execute per step: forward (layers 1-3), backward (z1 twice, z2 once, dA1, dW2,
    dW1), i.e. 4 x 2 M Q (D H1 + H1 H2) plus O(M Q H2)."""
    h1, h2 = hidden
    return 2.0 * m * q * (4.0 * d * h1 + 4.0 * h1 * h2 + 4.0 * h2)


def default_blocks(m: int, q: int, tiles: CtTiles = CT_TILES) -> int:
    """Backward blocks: one per SM (253 registers x 256 threads: one resident block per SM; each block
    holds a parameter-sized partial, so more blocks only cost memory), at most one per tile."""
    n_tiles = -(-m // tiles.pi) * -(-q // tiles.pj)
    sms = 1 if probe.numba_simulator() else cuda.get_current_device().MULTIPROCESSOR_COUNT
    return max(1, min(n_tiles, sms))


class Workspace:
    """Device buffers for one problem size (M, Q, layout); reused across steps."""

    def __init__(self, m: int, q: int, lay: Layout, tiles: CtTiles, blocks: int, stream) -> None:
        arr = lambda *shape: cuda.device_array(shape, np.float32, stream=stream)  # noqa: E731
        self.m, self.q, self.lay, self.tiles, self.blocks = m, q, lay, tiles, blocks
        self.dist, self.cost_out = arr(m, q), arr(m, q)
        self.lse_row, self.e_row, self.lse_col, self.s_col, self.max_prob = arr(m), arr(m), arr(q), arr(q), arr(q)
        self.part, self.grad = arr(blocks, lay.size), arr(lay.size)


def _views(d_theta, lay: Layout):
    return (d_theta[:lay.o_w2].reshape(lay.d + 1, lay.h1p), d_theta[lay.o_w2:lay.o_w3].reshape(lay.h1p, lay.h2p),
            d_theta[lay.o_w3:lay.o_w3 + lay.h2p], d_theta[lay.size - 1:])


def step_device(ws: Workspace, d_mem, d_qry, d_theta, rho: float, stream, d_cost=None) -> None:
    """One CT step on device arrays: ws.dist, the statistics (ws.e_row, ws.s_col, ws.max_prob) and the
    packed gradient ws.grad. ``d_cost`` (M, Q): the caller's cost (None: the C the forward computes)."""
    k, t, lay = kernels(ws.tiles), ws.tiles, ws.lay
    w1x, w2x, w3x, b3 = _views(d_theta, lay)
    cost_col = np.int32(lay.h1)
    k.forward[(-(-ws.q // t.pj), -(-ws.m // t.pi)), (t.td, t.td), stream](
        d_mem, d_qry, w1x, w2x, w3x, b3, cost_col, ws.dist, ws.cost_out)
    cost = ws.cost_out if d_cost is None else d_cost
    k.row_stats[ws.m, t.tpb, stream](ws.dist, cost, ws.lse_row, ws.e_row)
    k.col_stats[-(-ws.q // t.tpb), t.tpb, stream](ws.dist, cost, ws.lse_col, ws.s_col, ws.max_prob)
    k.backward[ws.blocks, (t.td, t.td), stream](
        d_mem, d_qry, w1x, w2x, w3x, cost_col, ws.dist, cost, ws.lse_row, ws.e_row, ws.lse_col, ws.s_col,
        np.float32(rho / ws.m), np.float32((1.0 - rho) / ws.q), ws.part)
    k.reduce[-(-lay.size // t.tpb), t.tpb, stream](ws.part, ws.grad)


def _inputs(memory, queries, nav, tiles: CtTiles):
    memory = np.ascontiguousarray(memory, np.float32)
    queries = np.ascontiguousarray(queries, np.float32)
    if memory.ndim != 2 or queries.ndim != 2 or memory.shape[1] != queries.shape[1] or not len(memory) \
            or not len(queries) or nav["W1"].shape[0] != memory.shape[1]:
        raise ValueError(f"memory {memory.shape}, queries {queries.shape}, W1 {nav['W1'].shape}: need (M > 0, D), "
                         f"(Q > 0, D) and W1 (D, H1)")
    return memory, queries, Layout.of(nav, tiles)


def ct_step(memory: np.ndarray, queries: np.ndarray, nav_params: dict[str, np.ndarray], rho: float = 0.5, *,
            tiles: CtTiles = CT_TILES, blocks: int | None = None) -> CTStep:
    """Same contract as ``runtime.ct_step.ct_step``: host arrays in, CTStep of host arrays out.
    ``tiles``/``blocks``: kernel geometry (the simulator tests use small ones)."""
    memory, queries, lay = _inputs(memory, queries, nav_params, tiles)
    m, q = len(memory), len(queries)
    stream = cuda.stream()
    ws = Workspace(m, q, lay, tiles, blocks or default_blocks(m, q, tiles), stream)
    d_theta = cuda.to_device(pack(nav_params, lay), stream=stream)
    step_device(ws, cuda.to_device(memory, stream=stream), cuda.to_device(queries, stream=stream), d_theta, rho,
                stream)
    grad, e_row, s_col, max_prob = (x.copy_to_host(stream=stream) for x in (ws.grad, ws.e_row, ws.s_col, ws.max_prob))
    stream.synchronize()
    loss = rho * float(e_row.mean(dtype=np.float64)) + (1.0 - rho) * float(s_col.mean(dtype=np.float64))
    return CTStep(loss, unpack(grad, lay), s_col, float(max_prob.mean(dtype=np.float64)))


def navigator_distances(nav_params: dict[str, np.ndarray], memory: np.ndarray, queries: np.ndarray, *,
                        tiles: CtTiles = CT_TILES) -> np.ndarray:
    """Same contract as ``runtime.ct_step.navigator_distances``: D (M, Q) float32, the forward kernel alone."""
    memory, queries, lay = _inputs(memory, queries, nav_params, tiles)
    m, q = len(memory), len(queries)
    stream = cuda.stream()
    up = lambda x: cuda.to_device(x, stream=stream)  # noqa: E731
    dist, cost = (cuda.device_array((m, q), np.float32, stream=stream) for _ in range(2))
    w1x, w2x, w3x, b3 = _views(up(pack(nav_params, lay)), lay)
    kernels(tiles).forward[(-(-q // tiles.pj), -(-m // tiles.pi)), (tiles.td, tiles.td), stream](
        up(memory), up(queries), w1x, w2x, w3x, b3, np.int32(lay.h1), dist, cost)
    out = dist.copy_to_host(stream=stream)
    stream.synchronize()
    return out


def fit_navigator(cost: np.ndarray, memory: np.ndarray, queries: np.ndarray, nav: dict[str, np.ndarray],
                  steps: int, lr: float, weight_decay: float = 0.01, rho: float = 0.5, *,
                  tiles: CtTiles = CT_TILES, blocks: int | None = None) -> list[float]:
    """Same contract as ``runtime.transport.fit_navigator``: ``steps`` AdamW steps on the CT loss,
    ``nav`` updated in place, -> the loss before each step. cost (M, Q) is the caller's C."""
    memory, queries, lay = _inputs(memory, queries, nav, tiles)
    m, q = len(memory), len(queries)
    if np.shape(cost) != (m, q):
        raise ValueError(f"cost {np.shape(cost)} does not match memory {m} x queries {q}")
    if steps <= 0:
        return []
    stream = cuda.stream()
    ws = Workspace(m, q, lay, tiles, blocks or default_blocks(m, q, tiles), stream)
    up = lambda x: cuda.to_device(np.ascontiguousarray(x, np.float32), stream=stream)  # noqa: E731
    d_mem, d_qry, d_cost, d_theta = up(memory), up(queries), up(cost), up(pack(nav, lay))
    d_m, d_v = up(np.zeros(lay.size)), up(np.zeros(lay.size))
    d_losses = cuda.device_array(steps, np.float32, stream=stream)
    k = kernels(tiles)
    for t in range(1, steps + 1):
        step_device(ws, d_mem, d_qry, d_theta, rho, stream, d_cost)
        k.loss[1, tiles.tpb, stream](ws.e_row, ws.s_col, np.float32(rho), d_losses, np.int32(t - 1))
        adamw_step_device(d_theta, ws.grad, d_m, d_v, t, lr, weight_decay=weight_decay, stream=stream)
    theta, losses = d_theta.copy_to_host(stream=stream), d_losses.copy_to_host(stream=stream)
    stream.synchronize()
    for key, value in unpack(theta, lay).items():
        nav[key][...] = value
    return [float(x) for x in losses]

