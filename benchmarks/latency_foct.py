"""FOCT latency: end to end (WideResNet-50-2 at 336, per stage) and method only, against PatchCore.

    python benchmarks/latency_foct.py --out benchmarks/results/foct_latency

1. End to end: ``edge-foct bench`` (edge_app/commands/bench.py, the served Inspector path) with a
   WRN-50-2 feature graph (random weights unless ``--wrn`` gives a pretrained one: timing only),
   input 336 -> 42 x 42 = 1764 patches of 1024 dims, 2-shot bank from ``--data``, every method
   in one run: median / p95 per stage.
2. Method only, D = 1024, Q = 1764, M memory rows (default 353 semantic + 100 episodic, FOCT's
   MVTec-like ratios on 2 x 1764 patches plus a full episodic memory): PatchCore's nearest
   neighbour, the edge soft-NN transport, and one AdamW step of the paper navigator at full
   width (timed on 64 query patches and scaled by Q, the cost being linear in Q; the paper's
   2 x 100 steps are that x 200, stated as an extrapolation) with its FLOPs: per step
   ~3 x 2*M*Q*(D*512 + 512*256 + 256).
Timings are taken on whatever machine runs this; the JSON records it (with its load average at the
start: a shared machine makes every number noisy).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import wrn_random  # benchmarks/wrn_random.py (the script's own folder is on sys.path)

from edge_foct.edge_app.evaluation.latency import run_bench
from edge_foct.edge_app.machine_info import machine_info
from edge_foct.runtime import atomic, navigator
from edge_foct.runtime.knn import nearest_sq_dist
from edge_foct.runtime.methods import METHODS, make_params
from edge_foct.runtime.transport import cost_matrix, ct_loss_grad


def timed(fn, n: int) -> dict[str, float]:
    fn()
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        t.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)), "runs": n}


def method_only(m: int, q: int, d: int, n: int, q_step: int = 64) -> dict:
    rng = np.random.default_rng(0)
    mem = rng.standard_normal((m, d)).astype(np.float32)
    feats = rng.standard_normal((q, d)).astype(np.float32)
    edge = METHODS["ct"](mem, np.ones(m, bool), make_params("ct", preset="edge"))
    out = {"M": m, "Q": q, "D": d,
           "patchcore": timed(lambda: nearest_sq_dist(feats, mem), n),
           "foct_edge_transport": timed(lambda: edge.score(feats, update=False), n)}
    nav = navigator.torch_default_init(d, (512, 256), seed=0)
    sub = feats[:q_step]  # a full step takes minutes here: time q_step patches, scale by Q (linear)
    cost = cost_matrix(mem, sub)

    def step():
        dist, cache = navigator.forward(nav, mem, sub, keep=True)
        navigator.backward(nav, mem, sub, ct_loss_grad(cost, dist)[1], cache)

    one = {k: v * q / q_step if k.endswith("_ms") else v for k, v in timed(step, 2).items()}
    flops = navigator.flops_per_step(m, q, d, (512, 256))
    out["paper_step"] = {**one, "timed_patches": q_step, "flops": flops,
                         "gflops_per_s": flops / one["median_ms"] / 1e6,
                         "paper_image_s_extrapolated": one["median_ms"] * 200 / 1e3,
                         "paper_image_flops": METHODS["foct"].flops(m, q, d, make_params("foct", preset="paper"))}
    specs = {"patchcore": ("patchcore", None), "foct/edge": ("foct", "edge"), "foct/paper": ("foct", "paper")}
    out["flops"] = {k: METHODS[n].flops(m, q, d, make_params(n, None, preset)) for k, (n, preset) in specs.items()}
    return out


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wrn", type=Path, default=wrn_random.DEFAULT)
    ap.add_argument("--data", type=Path, default=root.parent / "shared" / "data" / "metal_plate")
    ap.add_argument("--methods", nargs="+", default=["patchcore", "foct/edge"])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--m", type=int, default=453)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    result = {"machine": machine_info()}  # CPU, cores, load average at the start, versions, commit
    if not a.skip_e2e:
        wrn_random.ensure_wrn(a.wrn)
        result["end_to_end"] = run_bench(str(a.wrn), 336, a.methods, a.frames, a.warmup, a.data, 2, 0, None, a.out)
    result["method_only"] = method_only(a.m, 1764, 1024, 20)
    atomic.write_json(a.out / "latency_foct.json", result)
    mo = result["method_only"]
    lines = [f"method only, M={mo['M']} Q={mo['Q']} D={mo['D']} (median / p95 ms):",
             f"- patchcore NN: {mo['patchcore']['median_ms']:.1f} / {mo['patchcore']['p95_ms']:.1f}",
             f"- foct/edge transport (soft NN, no MLP): {mo['foct_edge_transport']['median_ms']:.1f} / "
             f"{mo['foct_edge_transport']['p95_ms']:.1f}",
             f"- paper navigator, one AdamW step at 1024-512-256-1: {mo['paper_step']['median_ms']:.0f} ms "
             f"(timed on {mo['paper_step']['timed_patches']} patches, scaled to Q) "
             f"({mo['paper_step']['flops']:.3g} FLOPs, {mo['paper_step']['gflops_per_s']:.1f} GFLOP/s); "
             f"x 200 steps = {mo['paper_step']['paper_image_s_extrapolated']:.0f} s per image (extrapolated), "
             f"{mo['paper_step']['paper_image_flops']:.3g} FLOPs per image",
             f"- FLOPs per image: " + ", ".join(f"{k} {v:.3g}" for k, v in mo["flops"].items())]
    if "end_to_end" in result:
        rows = {r["method"]: r["latency_ms"] for r in result["end_to_end"]["results"]}
        if "patchcore" in rows and "foct/edge" in rows:
            ratio = rows["foct/edge"]["total"]["median"] / rows["patchcore"]["total"]["median"]
            lines.append(f"- end to end, foct/edge / patchcore (median total): {ratio:.2f}x")
            result["end_to_end_ratio"] = ratio
            atomic.write_json(a.out / "latency_foct.json", result)
    md = "\n".join(lines)
    atomic.write_bytes(a.out / "latency_foct.md", (md + "\n").encode())
    print(md)
    print(json.dumps({"end_to_end_ratio": result.get("end_to_end_ratio")}))


if __name__ == "__main__":
    main()
