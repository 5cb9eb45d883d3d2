"""The transport kernels over a size sweep: ms, achieved GFLOP/s and GB/s, max error vs the NumPy reference.

    python benchmarks/kernels.py [--out benchmarks/results/kernels] [--repeats 20] [--quick]

On a machine where numba-cuda sees a GPU, each kernel runs on device-resident arrays and is timed
with CUDA events (transfers excluded; first launch = JIT compile, excluded); the error column
compares the host wrapper's result with the reference on the same inputs (max |gpu - ref| / max
|ref|). Without a GPU it says so, runs nothing on a GPU, and times the NumPy reference instead
(what the CPU path costs).
FLOP and byte counts per call are the models of benchmarks/kernels_roofline.md:

- soft_nn  (m, q, d): 2 m q d (the distance GEMM) FLOPs; (m + q) d + 2 q floats moved (each input once)
- sinkhorn (n, m), per iteration: 2 passes x n m x ~6 FLOPs (+1 exp); 2 x n m floats read
- adamw    (p,) parameters: ~12 FLOPs and 7 floats (4 read, 3 written) per parameter
- ct_step  (m, q, d, h1, h2), one fused CT step of the full navigator: the FLOPs the kernels execute
  (``runtime/cuda/ct_step.py step_flops``: 4 x the navigator forward, the backward recomputes it);
  bytes: inputs, D and C and their statistics passes, and the backward's per-tile read-modify-write of
  its block's gradient partial (the dominant term). On the CPU (NumPy reference) sizes above
  CPU_FLOPS_LIMIT are skipped, and on a GPU the error column is only computed below it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edge_foct.edge_app.machine_info import describe, machine_info
from edge_foct.runtime import adamw, ct_step, navigator, sinkhorn, transport
from edge_foct.runtime.cuda import probe

SWEEP = {
    # memory rows x query patches x dims: FOCT edge (42 x 42 grid at 336 px, WRN 1024-d), a small
    # MobileNetV2 bank at 256 px, and a PatchCore-size memory
    "soft_nn": [(400, 1764, 1024), (1600, 1764, 1024), (4096, 1764, 1024), (204, 1024, 768)],
    # prototypes x query patches: PatchCore+ at 256 px (2-shot coreset 5 % of 2048 patches), bigger memories
    "sinkhorn": [(102, 1024), (410, 1024), (1764, 1764), (4096, 4096)],
    # parameters: the authors' navigator (1024-512-256-1) is 656,129; a small one; a large one
    "adamw": [(10_000,), (656_129,), (10_000_000,)],
    # memory rows x query patches x dims x navigator widths: a small grid (21 x 21) with a narrow
    # navigator; FOCT at 336 px with a narrow navigator; the authors' navigator (1024-512-256-1)
    "ct_step": [(64, 441, 256, 64, 32), (400, 1764, 1024, 64, 32), (400, 1764, 1024, 512, 256)],
}
QUICK = {"soft_nn": SWEEP["soft_nn"][:1] + SWEEP["soft_nn"][-1:], "sinkhorn": SWEEP["sinkhorn"][:2],
         "adamw": SWEEP["adamw"][:2], "ct_step": SWEEP["ct_step"][:1]}
SINKHORN_ITERS = 10
CPU_FLOPS_LIMIT = 5e11  # ct_step sizes the NumPy reference runs (a few seconds to a minute per step here)
CT_TILES = None  # ct_step kernel geometry; None: production (the simulator test sets a small one)
CT_PAIRS_PER_TILE, CT_UNITS_PER_CHUNK, CT_HIDDEN2_WIDTH = 64, 64, 256  # production CtTiles(): pairs, hb, h2p


def counts(kernel: str, size: tuple) -> tuple[float, float]:
    """(FLOPs, bytes) of one call (one iteration for sinkhorn)."""
    if kernel == "soft_nn":
        m, q, d = size
        return 2.0 * m * q * d, 4.0 * ((m + q) * d + 2 * q)
    if kernel == "sinkhorn":
        n, m = size
        return 2 * 6.0 * n * m, 2 * 4.0 * n * m
    if kernel == "ct_step":
        m, q, d, h1, h2 = size
        flops = 2.0 * m * q * (4.0 * d * h1 + 4.0 * h1 * h2 + 4.0 * h2)  # = cuda/ct_step.py step_flops
        h1p = -(-(h1 + 1) // CT_UNITS_PER_CHUNK) * CT_UNITS_PER_CHUNK
        packed = (d + 1) * h1p + h1p * CT_HIDDEN2_WIDTH  # the padded W1x and W2x (ct_kernels.py)
        partial_rmw = 2.0 * -(-m * q // CT_PAIRS_PER_TILE) * packed  # each tile: read + write its block's partial
        return flops, 4.0 * ((m + q) * d + 8.0 * m * q + partial_rmw)
    (p,) = size
    return 12.0 * p, 28.0 * p


def problem(kernel: str, size: tuple, seed: int = 0):
    rng = np.random.default_rng(seed)
    if kernel == "soft_nn":
        m, q, d = size
        mem, qry = rng.random((m, d), np.float32), rng.random((q, d), np.float32)
        tau = 0.3 * float(np.median(transport.cost_matrix(mem[:256], qry).min(axis=0)))
        return mem, qry, tau
    if kernel == "sinkhorn":
        cost = rng.random(size, np.float32)
        return cost, 0.1 * float(np.median(cost))
    if kernel == "ct_step":
        m, q, d, h1, h2 = size
        return (rng.standard_normal((m, d), np.float32), rng.standard_normal((q, d), np.float32),
                navigator.torch_default_init(d, (h1, h2), seed=seed))
    (p,) = size
    params = {"w": rng.standard_normal(p).astype(np.float32)}
    return params, {"w": rng.standard_normal(p).astype(np.float32)}


def time_numpy(kernel: str, args, repeats: int) -> float:
    """Median ms of the NumPy reference (per iteration for sinkhorn)."""
    def once():
        if kernel == "soft_nn":
            transport.soft_nn_scores(*args)
        elif kernel == "sinkhorn":
            sinkhorn.sinkhorn_log(args[0], None, None, args[1], SINKHORN_ITERS)
        elif kernel == "ct_step":
            ct_step.ct_step(*args)
        else:
            params = {k: v.copy() for k, v in args[0].items()}
            adamw.adamw_step(params, args[1], adamw.AdamWState.zeros_like(params), 1e-3)
    once()
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        ms.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ms)) / (SINKHORN_ITERS if kernel == "sinkhorn" else 1)


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref|."""
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-30))


def time_gpu(kernel: str, args, repeats: int) -> tuple[float, float]:
    """(median kernel ms on device-resident data, max relative error of the result vs the reference)."""
    from numba import cuda

    from edge_foct.runtime.cuda import adamw as gadamw
    from edge_foct.runtime.cuda import ct_step as gct
    from edge_foct.runtime.cuda import sinkhorn as gsink
    from edge_foct.runtime.cuda import soft_nn as gnn

    stream = cuda.stream()
    if kernel == "soft_nn":
        mem, qry, tau = args
        d_mem, d_qry = cuda.to_device(mem, stream=stream), cuda.to_device(qry, stream=stream)
        d_mn = gnn.sq_norms_device(d_mem, stream)
        run = lambda: gnn.soft_nn_scores_device(d_mem, d_mn, d_qry, tau, stream)  # noqa: E731
        err = max(rel_err(g, r) for g, r in zip(gnn.soft_nn_scores(*args), transport.soft_nn_scores(*args)))
    elif kernel == "sinkhorn":
        cost, eps = args
        n, m = cost.shape
        dev = [cuda.to_device(x, stream=stream) for x in (cost, np.ascontiguousarray(cost.T),
               np.full(n, -np.log(n), np.float32), np.full(m, -np.log(m), np.float32),
               np.zeros(n, np.float32), np.zeros(m, np.float32))]
        run = lambda: gsink.iterate_device(*dev, eps, 1, stream)  # noqa: E731
        got = gsink.sinkhorn_log(cost, None, None, eps, SINKHORN_ITERS)
        err = rel_err(got.plan, sinkhorn.sinkhorn_log(cost, None, None, eps, SINKHORN_ITERS).plan)
    elif kernel == "ct_step":
        mem, qry, nav = args
        tiles = CT_TILES or gct.CT_TILES
        lay = gct.Layout.of(nav, tiles)
        ws = gct.Workspace(len(mem), len(qry), lay, tiles, gct.default_blocks(len(mem), len(qry), tiles), stream)
        dev = [cuda.to_device(x, stream=stream) for x in (mem, qry, gct.pack(nav, lay))]
        run = lambda: gct.step_device(ws, *dev, 0.5, stream)  # noqa: E731
        err = None
        if counts(kernel, (len(mem), len(qry), mem.shape[1], *nav["W2"].shape))[0] <= CPU_FLOPS_LIMIT:
            got, want = gct.ct_step(*args, tiles=tiles), ct_step.ct_step(*args)
            scale = max(float(np.abs(g).max()) for g in want.grads.values())  # b3's gradient is 0 + rounding
            err = max(rel_err(got.scores, want.scores),
                      max(float(np.abs(got.grads[k] - want.grads[k]).max()) for k in nav) / scale)
    else:
        p, g = args[0]["w"], args[1]["w"]
        dev = [cuda.to_device(x, stream=stream) for x in (p, g, np.zeros_like(p), np.zeros_like(p))]
        run = lambda: gadamw.adamw_step_device(*dev, 1, 1e-3, stream=stream)  # noqa: E731
        ref, got = {"w": p.copy()}, {"w": p.copy()}
        adamw.adamw_step(ref, args[1], adamw.AdamWState.zeros_like(ref), 1e-3)
        gadamw.adamw_step(got, args[1], adamw.AdamWState.zeros_like(got), 1e-3)
        err = rel_err(got["w"], ref["w"])
    run()  # JIT compile
    stream.synchronize()
    ms = []
    for _ in range(repeats):
        start, end = cuda.event(), cuda.event()
        start.record(stream)
        run()
        end.record(stream)
        end.synchronize()
        ms.append(start.elapsed_time(end))
    return float(np.median(ms)), err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="Write OUT/kernels.json.")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="Two sizes per kernel.")
    args = ap.parse_args()
    _, usable, reason = probe.numba_cuda()
    machine = machine_info()
    print(describe(machine))
    if usable:
        print(f"GPU: {reason}; kernels timed with CUDA events, data resident on the device")
    else:
        print(f"ran nothing on a GPU ({reason}); NumPy reference timings only")
    rows = []
    for kernel, sizes in (QUICK if args.quick else SWEEP).items():
        for size in sizes:
            flops, nbytes = counts(kernel, size)
            if not usable and kernel == "ct_step" and flops > CPU_FLOPS_LIMIT:
                print(f"{kernel:9s} {'x'.join(map(str, size)):>16s}  skipped on the CPU ({flops:.1e} FLOPs per step)")
                continue
            prob = problem(kernel, size)
            ms, err = time_gpu(kernel, prob, args.repeats) if usable else (time_numpy(kernel, prob, args.repeats), None)
            rows.append({"kernel": kernel, "size": list(size), "device": "gpu" if usable else "numpy",
                         "ms": ms, "gflops": flops / ms / 1e6, "gbps": nbytes / ms / 1e6, "flops": flops,
                         "bytes": nbytes, "max_err": err,
                         "per": "iteration" if kernel == "sinkhorn" else "call"})
            r = rows[-1]
            print(f"{kernel:9s} {'x'.join(map(str, size)):>16s}  {ms:9.3f} ms/{r['per'][:4]}  "
                  f"{r['gflops']:8.1f} GFLOP/s  {r['gbps']:7.1f} GB/s  "
                  f"rel err {'-' if err is None else f'{err:.1e}'}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "kernels.json").write_text(json.dumps({"machine": machine, "gpu": usable, "note": reason,
                                                           "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
