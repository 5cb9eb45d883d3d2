"""foct/edge's transport step beside an OpenVINO engine: one graph vs NumPy maths, against patchcore.

    python benchmarks/transport_step.py --size 256 --frames 100 --out benchmarks/results/transport_step

One process, one OpenVINO backbone (``--engine``, default openvino: bf16 where the CPU has it), the
random-weights WRN-50-2 graph (benchmarks/wrn_random.py) unless ``--backbone``, a ``--shots`` bank
from ``--data``'s train/good, three rows fitted on the same support and timed interleaved frame by
frame through the whole per-frame path (``Inspector.inspect``):

    patchcore                    PatchCore's nearest search on OpenVINO (what foct/edge is compared to)
    foct/edge                    the transport step as one OpenVINO graph (runtime/engines/openvino_transport.py)
    foct/edge, numpy transport   the cost matrix on OpenVINO, tau, softmaxes and expectations in NumPy
                                 (transport.soft_nn_transport with the engine's distance GEMM: the path
                                 before the graph)

Both foct/edge rows see the same frames online and keep the same scores to float rounding (the GEMM
expansion |m|^2 + |q|^2 - 2 m.q cancels in f32 on both sides, in another summation order) and admit
the same patches but for near ties; the table gives the largest relative patch-score difference and
on how many frames the admitted patches were equal. Prints median / p95 per stage and the
ratio to patchcore (machine, commit); ``--out`` keeps .md and .json.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from pathlib import Path

import numpy as np
from edge_foct.edge_app.evaluation.latency import STAGES, fit_row, open_rows
from edge_foct.edge_app.evaluation.runner import load_foreground
from edge_foct.edge_app.machine_info import describe, machine_info
from edge_foct.runtime import atomic
from edge_foct.runtime.threads import apply_plan, plan_threads
from edge_foct.runtime.transport import soft_nn_transport

REPO = Path(__file__).resolve().parents[1]
LABELS = ("patchcore", "foct/edge", "foct/edge, numpy transport")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "bottle")
    ap.add_argument("--backbone", type=Path, default=None, help="feature ONNX [default: the random WRN-50-2]")
    ap.add_argument("--engine", default="openvino")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"no data at {args.data}: nothing measured")
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from anomalib_compare import load_frames  # the same support and frames as the anomalib comparison
    from wrn_random import DEFAULT, ensure_wrn

    graph = args.backbone or ensure_wrn(DEFAULT)
    support, frames = load_frames(args.data, args.shots, 0, args.frames + args.warmup)
    plan = plan_threads(None)
    apply_plan(plan)
    rows = open_rows(graph, [args.engine], [plan], ["patchcore", "foct/edge", "foct/edge"])
    for row in rows:
        fit_row(row, row.backbone.preprocessor(args.size, args.size), support, load_foreground()[0])
    numpy_row = rows[2]
    compute = numpy_row.compute
    numpy_row.inspector.method.use_backend(dataclasses.replace(
        compute, soft_nn_transport=functools.partial(soft_nn_transport, sq=compute.sq_dists)))
    times = {label: {s: [] for s in STAGES} for label in LABELS}
    agree = {"max_rel_score_diff": 0.0, "admitted_equal": 0}
    for i in range(args.warmup + args.frames):
        out = {}
        for label, row in zip(LABELS, rows):
            out[label] = r = row.inspector.inspect(frames[i % len(frames)])
            if i >= args.warmup:
                for s in STAGES:
                    times[label][s].append(r.timings_ms[s])
        a, b = out["foct/edge"], out["foct/edge, numpy transport"]
        rel = np.abs(a.patch_scores - b.patch_scores) / np.maximum(np.abs(b.patch_scores), 1e-12)
        agree["max_rel_score_diff"] = max(agree["max_rel_score_diff"], float(rel.max()))
        agree["admitted_equal"] += a.diagnostics["admitted_patches"] == b.diagnostics["admitted_patches"]
    base = float(np.median(times["patchcore"]["total"]))
    machine = machine_info()
    result = {"machine": machine, "engine": rows[0].backbone.engine.description, "size": args.size,
              "shots": args.shots, "frames": args.frames, "warmup": args.warmup, "agreement_frames": agree,
              "load_average": os.getloadavg(), "rows": {}}
    lines = ["| row | total median / p95 ms | method median ms | backbone median ms | x patchcore |",
             "|---|---|---|---|---|"]
    for label in LABELS:
        t = {s: {"median": float(np.median(v)), "p95": float(np.percentile(v, 95))} for s, v in times[label].items()}
        result["rows"][label] = t
        lines.append(f"| {label} | {t['total']['median']:.2f} / {t['total']['p95']:.2f} | {t['method']['median']:.2f} "
                     f"| {t['backbone']['median']:.2f} | {t['total']['median'] / base:.3f} |")
    n = args.warmup + args.frames
    md = (f"{describe(machine)}\n\n{rows[0].backbone.info.backbone_id} on {result['engine']}, {args.size} px, "
          f"{args.shots}-shot bank from {args.data.name}, {args.frames} frames after {args.warmup} warm-up, rows "
          f"interleaved frame by frame in one process; the two foct/edge rows: largest relative patch-score "
          f"difference {agree['max_rel_score_diff']:.1e}, admitted patches equal on {agree['admitted_equal']}/{n} "
          f"frames; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end\n\n"
          + "\n".join(lines) + "\n")
    print(md)
    if args.out:
        atomic.write_bytes(args.out / f"transport_step_{args.size}.md", md.encode())
        atomic.write_json(args.out / f"transport_step_{args.size}.json", result)


if __name__ == "__main__":
    main()
