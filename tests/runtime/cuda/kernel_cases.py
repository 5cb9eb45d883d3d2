"""Kernel-vs-reference cases, run either in numba's CUDA simulator or on a real GPU.

NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported, so the simulator run happens
in a child process: ``python tests/runtime/cuda/kernel_cases.py OUT.json`` runs every case and
writes {case: "ok" | traceback}. test_kernels_sim.py starts that child; test_kernels_gpu.py calls
the same functions in-process when a real GPU exists. Sizes are small and ragged (not multiples of
the kernels' tile or block sizes) because the simulator runs every thread in Python.
"""

from __future__ import annotations

import json
import sys
import traceback

import numpy as np

from edge_foct.runtime import adamw as ref_adamw
from edge_foct.runtime import sinkhorn as ref_sinkhorn
from edge_foct.runtime import transport as ref_transport


# The simulator runs each thread as a Python thread and pays ~25 ms per block (on a loaded 2-core
# machine): the cases keep the number of blocks launched small. Sinkhorn launches n + m blocks per
# iteration, so its cases use few iterations (the GPU must equal the reference at any n_iter; the
# reference's own tests cover convergence) and 4-thread blocks (ragged against 4, cheap to run).
SMALL_TPB = 4


def _small_tiles():
    from edge_foct.runtime.cuda.soft_nn import Tiles

    return Tiles(b=8, bk=4, td=4)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- Sinkhorn ---------------------------------------------------------------------------------
def _check_sinkhorn(cost, a, b, eps, n_iter, tpb=SMALL_TPB):
    from edge_foct.runtime.cuda import sinkhorn as gpu

    want = ref_sinkhorn.sinkhorn_log(cost, a, b, eps, n_iter)
    got = gpu.sinkhorn_log(cost, a, b, eps, n_iter, tpb=tpb)
    assert type(got) is ref_sinkhorn.SinkhornResult
    assert got.plan.shape == want.plan.shape and got.plan.dtype == np.float32
    assert np.isfinite(got.plan).all() and np.isfinite(got.f).all() and np.isfinite(got.g).all()
    scale = float(np.abs(cost).max()) + eps
    np.testing.assert_allclose(got.f, want.f, rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(got.g, want.g, rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(got.plan, want.plan, rtol=1e-3, atol=1e-6 * float(want.plan.max()))
    assert abs(got.marginal_error - want.marginal_error) <= 1e-4 + 1e-2 * want.marginal_error
    return got


def case_sinkhorn_uniform_ragged():
    for n, m, n_iter, seed in ((5, 7, 3, 0), (33, 17, 1, 1), (1, 3, 1, 2)):
        cost = _rng(seed).random((n, m)).astype(np.float32) * 3
        got = _check_sinkhorn(cost, None, None, 0.1 * float(np.median(cost)), n_iter)
        np.testing.assert_allclose(got.plan.sum(axis=0), np.full(m, 1 / m), rtol=1e-4)  # columns exact


def case_sinkhorn_production_block():
    from edge_foct.runtime.cuda import sinkhorn as gpu

    cost = _rng(13).random((3, 5)).astype(np.float32)  # most of the 128 threads idle: the tree still sums right
    _check_sinkhorn(cost, None, None, 0.05, 1, tpb=gpu.TPB)


def case_sinkhorn_given_marginals():
    rng = _rng(3)
    cost = rng.random((6, 9)).astype(np.float32)
    a = rng.random(6).astype(np.float32) + 0.1
    b = rng.random(9).astype(np.float32) + 0.1
    a /= a.sum()
    b /= b.sum()
    got = _check_sinkhorn(cost, a, b, 0.5, 4)  # a large eps converges in a few iterations
    np.testing.assert_allclose(got.plan.sum(axis=1), a, atol=1e-4)
    assert got.marginal_error < 1e-3


def case_sinkhorn_small_eps_large_cost():
    cost = (_rng(4).random((6, 11)) * 1e4).astype(np.float32)
    got = _check_sinkhorn(cost, None, None, 1.0, 3)  # cost / eps up to 1e4: exp would overflow outside log domain
    assert np.isfinite(got.marginal_error)


def case_softmin_primitive():
    from numba import cuda

    from edge_foct.runtime.cuda import sinkhorn as gpu

    rng = _rng(5)
    cost = rng.random((3, 261)).astype(np.float32)  # production block: 261 = 2 x 128 + 5 columns
    h = rng.standard_normal(261).astype(np.float32)
    eps = 0.3
    out = cuda.device_array(3, np.float32)
    zero = cuda.to_device(np.zeros(261, np.float32))
    gpu.kernels(gpu.TPB).softmin_rows[3, gpu.TPB](cuda.to_device(cost), cuda.to_device(h), zero,
                                                  np.float32(1 / eps), np.float32(eps), out)
    np.testing.assert_allclose(out.copy_to_host(), ref_sinkhorn.softmin(eps, cost, h), rtol=1e-5, atol=1e-5)


# --- AdamW ------------------------------------------------------------------------------------
def _adamw_problem(seed: int):
    rng = _rng(seed)
    shapes = {"W1": (5, 7), "b1": (7,), "W2": (33, 1), "b3": (1,)}
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(3)]
    return params, grads


def case_adamw_host_arrays():
    from edge_foct.runtime.cuda import adamw as gpu

    params, grads = _adamw_problem(6)
    ref_p = {k: v.copy() for k, v in params.items()}
    ref_s, got_s = ref_adamw.AdamWState.zeros_like(ref_p), ref_adamw.AdamWState.zeros_like(params)
    for g in grads:
        ref_adamw.adamw_step(ref_p, g, ref_s, lr=1e-2, weight_decay=0.1)
        gpu.adamw_step(params, g, got_s, lr=1e-2, weight_decay=0.1)
    assert got_s.t == ref_s.t == 3
    for k in params:
        np.testing.assert_allclose(params[k], ref_p[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_s.m[k], ref_s.m[k], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got_s.v[k], ref_s.v[k], rtol=1e-5, atol=1e-8)


def case_adamw_device_arrays():
    from numba import cuda

    from edge_foct.runtime.cuda import adamw as gpu

    params, grads = _adamw_problem(7)
    ref_p = {k: v.copy() for k, v in params.items()}
    ref_s = ref_adamw.AdamWState.zeros_like(ref_p)
    d_p = {k: cuda.to_device(v) for k, v in params.items()}
    d_s = gpu.zeros_state_device(d_p)
    for g in grads:
        ref_adamw.adamw_step(ref_p, g, ref_s, lr=2e-4, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.0)
        gpu.adamw_step(d_p, {k: cuda.to_device(v) for k, v in g.items()}, d_s, lr=2e-4, betas=(0.8, 0.99),
                       eps=1e-6, weight_decay=0.0)
    for k in params:
        np.testing.assert_allclose(d_p[k].copy_to_host(), ref_p[k], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(d_s.v[k].copy_to_host(), ref_s.v[k], rtol=1e-5, atol=1e-9)


# --- soft nearest-neighbour transport score ----------------------------------------------------
def _check_soft_nn(m, q, d, tau_ratio, seed, tiles=None):
    from edge_foct.runtime.cuda import soft_nn as gpu

    tiles = tiles or _small_tiles()
    rng = _rng(seed)
    mem = rng.standard_normal((m, d)).astype(np.float32)
    qry = rng.standard_normal((q, d)).astype(np.float32)
    c = ((mem[:, None] - qry[None]) ** 2).sum(-1)
    tau = tau_ratio * float(np.median(c.min(axis=0)))
    want_s, want_p = ref_transport.soft_nn_scores(mem, qry, tau)
    got_s, got_p = gpu.soft_nn_scores(mem, qry, tau, tiles=tiles)
    assert got_s.shape == (q,) and got_s.dtype == np.float32 and got_p.shape == (q,)
    np.testing.assert_allclose(got_s, want_s, rtol=2e-4, atol=1e-4 * float(c.max()))
    np.testing.assert_allclose(got_p, want_p, rtol=2e-4, atol=1e-5)
    return mem, qry, tau, got_s, got_p, c


def case_soft_nn_ragged():
    # 8 x 8 tiles, 4-deep chunks: 33 rows = 5 tiles, 17 queries = 3 blocks, d = 10 = 3 ragged chunks
    for m, q, d, seed in ((5, 7, 3, 8), (33, 17, 10, 9)):
        _check_soft_nn(m, q, d, 0.3, seed)


def case_soft_nn_splits():
    from edge_foct.runtime.cuda import soft_nn as gpu

    t = _small_tiles()
    assert gpu.split_rows(70, 130, gpu.TILES) == 64 and gpu.split_rows(70, 1, gpu.TILES) == 64
    assert gpu.split_rows(33, 17, t, target_blocks=6) == 24  # 5 row tiles of 8 in 2 splits of 3 tiles
    rng = _rng(14)
    mem, qry = rng.standard_normal((33, 5)).astype(np.float32), rng.standard_normal((17, 5)).astype(np.float32)
    one = gpu.soft_nn_scores(mem, qry, 2.0, tiles=t, target_blocks=1)  # one split
    many = gpu.soft_nn_scores(mem, qry, 2.0, tiles=t, target_blocks=100)  # one split per row tile
    for x, y in zip(one, many):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def case_soft_nn_production_tiles():
    from edge_foct.runtime.cuda import soft_nn as gpu

    _check_soft_nn(67, 5, 18, 0.3, 10, tiles=gpu.TILES)  # 67 rows: two 64-row tiles, ragged k-chunk


def case_soft_nn_limits_and_permutation():
    from edge_foct.runtime.cuda import soft_nn as gpu

    mem, qry, tau, s, p, c = _check_soft_nn(9, 11, 6, 0.3, 11)
    # tau -> 0: hard nearest neighbour, concentration -> 1
    t = _small_tiles()
    s0, p0 = gpu.soft_nn_scores(mem, qry, 1e-3 * tau, tiles=t)
    np.testing.assert_allclose(s0, c.min(axis=0), rtol=1e-4, atol=1e-4)
    assert (p0 > 0.99).all()
    # tau -> inf: uniform map, score = mean cost, concentration = 1/m
    s_inf, p_inf = gpu.soft_nn_scores(mem, qry, 1e6 * tau, tiles=t)
    np.testing.assert_allclose(s_inf, c.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(p_inf, 1 / 9, rtol=1e-3)
    # the memory is a set: permuting its rows changes nothing
    perm = _rng(12).permutation(9)
    sp, pp = gpu.soft_nn_scores(mem[perm], qry, tau, tiles=t)
    np.testing.assert_allclose(sp, s, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pp, p, rtol=1e-5, atol=1e-6)


# --- the fused CT step (navigator forward + both maps + backward) ------------------------------
def _ct_tiles(kind: str):
    """Small, ragged geometries: two hidden-2 stages; a 1 x 6 pair tile with 3 x 3 threads; r = 4; and
    the production per-thread tiles (r = 4, r2 = 16: four hidden-2 stages, bk = 16) on 4 x 4 threads
    (production's 16 x 16 threads run ~10 minutes per block in the simulator; test_kernels_gpu.py)."""
    from edge_foct.runtime.cuda.ct_kernels import CtTiles

    return {"a": CtTiles(pi=2, pj=2, td=2, r=2, bk=3, r2=4, tpb=4),
            "b": CtTiles(pi=1, pj=6, td=3, r=2, bk=4, r2=2, tpb=4),
            "c": CtTiles(pi=4, pj=2, td=2, r=4, bk=5, r2=4, tpb=8),
            "d": CtTiles(pi=2, pj=8, td=4, r=4, bk=16, r2=16, tpb=8)}[kind]


def _ct_problem(m, q, d, hidden, seed, scale=3.0):
    from edge_foct.runtime import navigator

    rng = _rng(seed)
    mem = rng.standard_normal((m, d)).astype(np.float32)
    qry = rng.standard_normal((q, d)).astype(np.float32)
    nav = navigator.torch_default_init(d, hidden, seed=seed)
    for v in nav.values():
        v *= scale  # a spread of D that makes the maps far from uniform
    return mem, qry, nav


def _check_ct(got, want):
    from edge_foct.runtime.ct_step import CTStep

    assert type(got) is CTStep and set(got.grads) == set(want.grads)
    assert abs(got.loss - want.loss) <= 1e-5 * abs(want.loss) + 1e-6
    assert abs(got.concentration - want.concentration) <= 1e-5
    assert got.scores.shape == want.scores.shape and got.scores.dtype == np.float32
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5 * float(np.abs(want.scores).max()))
    scale = max(float(np.abs(g).max()) for g in want.grads.values())
    for k, g in want.grads.items():
        assert got.grads[k].shape == g.shape and got.grads[k].dtype == np.float32, k
        np.testing.assert_allclose(got.grads[k], g, rtol=1e-3, atol=2e-5 * scale, err_msg=k)


def case_ct_step_ragged():
    from edge_foct.runtime.ct_step import ct_step as ref
    from edge_foct.runtime.ct_step import navigator_distances
    from edge_foct.runtime.cuda import ct_step as gpu

    # tiles a: 5 x 7 pairs in 2 x 2 tiles, d + 1 = 9 in 3-deep chunks, H1 + 1 = 7 -> 8 (two chunks), the
    # bias row of dW1 alone in the last 4-row sub-chunk; tiles b: 1 x 6 tiles over 3 x 8 pairs, d + 1 =
    # 10 rows of dW1 in 6-row sub-chunks, cost unit at 4; tiles d: d + 1 = 18 in 16-deep chunks, the
    # cost unit at 17 in the second 16-unit chunk, hidden2 = 50 of 64 in four stages
    for (m, q, d, hidden, seed), kind in (((5, 7, 8, (6, 5), 20), "a"), ((3, 8, 9, (4, 3), 21), "b"),
                                          ((3, 9, 17, (17, 50), 25), "d")):
        mem, qry, nav = _ct_problem(m, q, d, hidden, seed)
        want = ref(mem, qry, nav, 0.3)
        _check_ct(gpu.ct_step(mem, qry, nav, 0.3, tiles=_ct_tiles(kind), blocks=3), want)
        assert want.concentration > 1.5 / m  # the maps are far from uniform: the check has teeth
        dist = navigator_distances(nav, mem, qry)
        np.testing.assert_allclose(gpu.navigator_distances(nav, mem, qry, tiles=_ct_tiles(kind)), dist,
                                   rtol=1e-5, atol=1e-5 * float(np.abs(dist).max()))


def case_ct_step_soft_nn_init_blocks_and_permutation():
    from edge_foct.runtime import navigator, transport
    from edge_foct.runtime.ct_step import ct_step as ref
    from edge_foct.runtime.cuda import ct_step as gpu

    rng = _rng(22)
    m, q, d = 9, 5, 4
    mem, qry = rng.standard_normal((m, d)).astype(np.float32), rng.standard_normal((q, d)).astype(np.float32)
    tau = 0.3 * transport.nn_cost_scale(transport.cost_matrix(mem, qry))
    nav = navigator.soft_nn_init(d, (5, 3), tau)  # D = C / tau; every other unit sits at z = 0 exactly
    t = _ct_tiles("c")
    one = gpu.ct_step(mem, qry, nav, 0.5, tiles=t, blocks=1)
    _check_ct(one, ref(mem, qry, nav, 0.5))
    want_s, want_p = transport.soft_nn_scores(mem, qry, tau)  # step 0 is the soft nearest neighbour
    np.testing.assert_allclose(one.scores, want_s, rtol=1e-5)
    assert abs(one.concentration - float(want_p.mean())) < 1e-5
    many = gpu.ct_step(mem, qry, nav, 0.5, tiles=t, blocks=4)  # 3 x 3 tiles over 4 blocks' partials
    perm = _rng(23).permutation(m)
    shuffled = gpu.ct_step(mem[perm], qry, nav, 0.5, tiles=t, blocks=2)  # the memory is a set
    scale = max(float(np.abs(g).max()) for g in one.grads.values())
    for other in (many, shuffled):
        assert abs(other.loss - one.loss) <= 1e-6 * abs(one.loss)
        np.testing.assert_allclose(other.scores, one.scores, rtol=1e-6)
        for k, g in one.grads.items():  # only the summation order differs
            np.testing.assert_allclose(other.grads[k], g, rtol=1e-4, atol=1e-6 * scale, err_msg=k)


def case_ct_fit_navigator():
    from edge_foct.runtime import transport
    from edge_foct.runtime.cuda import ct_step as gpu

    mem, qry, nav = _ct_problem(4, 6, 5, (3, 2), 24)
    cost = transport.cost_matrix(mem, qry)
    ref_nav = {k: v.copy() for k, v in nav.items()}
    want = transport.fit_navigator(cost, mem, qry, ref_nav, 3, lr=1e-2, weight_decay=0.1, rho=0.6)
    got = gpu.fit_navigator(cost, mem, qry, nav, 3, lr=1e-2, weight_decay=0.1, rho=0.6, tiles=_ct_tiles("a"),
                            blocks=2)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[-1] < got[0]  # it descends
    for k, v in ref_nav.items():
        assert nav[k].shape == v.shape and nav[k].dtype == np.float32
        if k == "b3":  # both softmaxes ignore a shift of D: its gradient is 0 up to rounding, which
            continue  # AdamW normalises into +-lr steps of arbitrary sign, in torch as here
        np.testing.assert_allclose(nav[k], v, rtol=1e-4, atol=1e-5 * float(np.abs(v).max()), err_msg=k)


# --- the benchmark's GPU path (benchmarks/kernels.py) -----------------------------------------
def case_benchmark_gpu_path():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "kernels.py"
    spec = importlib.util.spec_from_file_location("bench_kernels", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.SINKHORN_ITERS = 1  # the simulator pays per block launched
    bench.CT_TILES = _ct_tiles("a")  # production tiles are 256 threads of Python per block here
    sizes = (("soft_nn", (9, 11, 5)), ("sinkhorn", (3, 4)), ("adamw", (10,)), ("ct_step", (3, 5, 4, 3, 2)))
    for kernel, size in sizes:
        _, err = bench.time_gpu(kernel, bench.problem(kernel, size), repeats=1)
        assert err < 1e-4, (kernel, err)


CASES = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


def run_all(names=None) -> dict[str, str]:
    out = {}
    for name in names or CASES:
        try:
            CASES[name]()
            out[name] = "ok"
        except Exception:  # the runner reports every case; the parent test asserts on each
            out[name] = traceback.format_exc()
    return out


def _lock_simulator_shared_arrays() -> None:
    """numba-cuda's simulator gives a block's threads one shared array per call site by an unlocked
    check-then-set (FakeCUDAShared.array): two threads preempted in between get different arrays, and
    the kernel silently computes garbage. Rare at the default switch interval, common at the short one
    below. This is that method with a lock (same call-site key: the caller's file and line)."""
    import threading
    import traceback

    from numba.cuda.simulator import kernelapi

    lock = threading.Lock()
    unlocked = kernelapi.FakeCUDAShared.array

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # dynamic shared memory, or the simulator's own refusal
            return unlocked(self, shape, dtype, alignment)
        caller = tuple(traceback.extract_stack(sys._getframe())[-2][0:2])
        with lock:
            if caller not in self._allocations:
                self._allocations[caller] = np.empty(shape, kernelapi.numpy_support.as_dtype(dtype)
                                                     if isinstance(dtype, kernelapi.types.Type) else dtype)
            return self._allocations[caller]

    kernelapi.FakeCUDAShared.array = array


if __name__ == "__main__":
    # The simulator runs a block's threads as Python threads that meet at every syncthreads; with the
    # default 5 ms GIL switch interval each barrier costs several intervals (~10x slower on 2 cores).
    sys.setswitchinterval(5e-5)
    _lock_simulator_shared_arrays()
    results = run_all(sys.argv[2:] or None)
    with open(sys.argv[1], "w") as f:
        json.dump(results, f, indent=1)
