"""WideResNet-50-2 feature graph latency: ONNX Runtime (CPU, the runtime's OrtEngine) vs torch eager.

    python benchmarks/backbone_latency.py --out benchmarks/results/backbone_latency

Batch 1 at 256 (PatchCore+) and 336 (FOCT), the whole feature graph (layer1..layer3 plus the
PatchCore aggregation). Random weights by default (latency does not depend on them; ``--weights``
takes a state dict). Per size: ``--warmup`` untimed runs of each backend, then ``--runs`` timed runs,
ORT and torch interleaved so that load from other jobs hits both alike; median and p95 in ms, and
the max |ORT - torch| of the features beside them. Prints a table headed by the machine and git
commit and writes ``OUT/backbone_latency.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edge_foct.edge_app.machine_info import describe, machine_info
from edge_foct.export.wrn import build_wide_resnet50, export_module
from edge_foct.runtime import atomic, names
from edge_foct.runtime.engines import OrtEngine


def stats(ms: list[float]) -> dict[str, float]:
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "min_ms": float(np.min(ms)), "runs": len(ms)}


def bench_size(module, engine: OrtEngine, size: int, warmup: int, runs: int) -> list[dict]:
    x = np.random.default_rng(size).standard_normal((1, 3, size, size)).astype(np.float32)
    xt = torch.from_numpy(x)
    feed = {names.BACKBONE_INPUT: x}
    with torch.inference_mode():
        for _ in range(warmup):
            engine.run(feed)
            module(xt)
        t_ort, t_torch = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            got = engine.run(feed)[names.BACKBONE_OUTPUT]
            t1 = time.perf_counter()
            ref = module(xt)
            t2 = time.perf_counter()
            t_ort.append((t1 - t0) * 1e3)
            t_torch.append((t2 - t1) * 1e3)
    err = float(np.abs(got - ref.numpy()).max())
    grid = f"{size // 8}x{size // 8}"
    return [{"size": size, "grid": grid, "backend": engine.description, **stats(t_ort), "max_abs_err": err},
            {"size": size, "grid": grid, **stats(t_torch), "max_abs_err": 0.0,
             "backend": f"torch {torch.__version__} eager ({torch.get_num_threads()} threads)"}]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/backbone_latency"))
    ap.add_argument("--sizes", default="256,336")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--weights", default=None, help="WRN-50-2 state dict (default: random weights)")
    ap.add_argument("--threads", type=int, default=None, help="threads for both backends (default: their own)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    module, backbone_id, pretrained = build_wide_resnet50(args.weights, random_weights=args.weights is None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = export_module(module, Path(tmp) / "wrn.onnx", backbone_id, pretrained)
        engine = OrtEngine(path, threads=args.threads)
        for size in (int(s) for s in args.sizes.split(",")):
            rows += bench_size(module, engine, size, args.warmup, args.runs)
    info = machine_info()
    record = {"command": " ".join(["python", "benchmarks/backbone_latency.py", *(argv or sys.argv[1:])]),
              "machine": info, "backbone_id": backbone_id, "batch": 1, "rows": rows,
              "note": "shared development machine: other jobs ran at the same time, timings are noisy"}
    atomic.write_json(args.out / "backbone_latency.json", record)
    print(f"WRN-50-2 feature graph, batch 1 | {describe(info)}")
    print(f"| input | grid | backend | median ms | p95 ms | max abs err vs torch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['grid']} | {r['backend']} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | "
              f"{r['max_abs_err']:.1e} |")
    print(f"-> {args.out / 'backbone_latency.json'}")


if __name__ == "__main__":
    main()
