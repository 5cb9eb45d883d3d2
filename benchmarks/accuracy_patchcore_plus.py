"""PatchCore+ lambda ablation on real data, with the protocol of `edge-foct eval`.

    python benchmarks/accuracy_patchcore_plus.py --data ../shared/data --categories metal_plate \\
        --backbone ../shared/weights/mobilenetv2-12-int8.onnx --out benchmarks/results/patchcore_plus_lambda

The main comparison (patchcore vs patchcore+ vs vanilla) is an `edge-foct eval` run
(benchmarks/README.md). This script answers the question that run cannot, because `eval` takes
presets and not parameter values: how the weight of the transport term changes the result.
lambda = 0 is the "W* without T*" ablation; lambda = 0.3 the paper's value on the objective as
written (a sum over the m query patches); lambda = 0.3 * m is the same objective with the
reconstruction averaged over patches instead (identical iterates up to the 1/m factor). Every
value runs on the same features, support draws and test order (edge_app/evaluation/protocol.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edge_foct.edge_app.backbones import resolve_backbone
from edge_foct.edge_app.datasets.mvtec import find_categories
from edge_foct.edge_app.evaluation.protocol import FeatureStore, MethodSpec, pixel_truth, run_split, split_metrics
from edge_foct.edge_app.evaluation.report import accuracy_table, summarise, write_results
from edge_foct.runtime import atomic
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.preprocess import Preprocessor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--categories", nargs="+", default=["metal_plate"])
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--lams", type=float, nargs="+", default=[0.0, 0.3, 3.0, 30.0])
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    resolved = resolve_backbone(a.backbone)
    bb = Backbone.load(resolved.path)
    pre = Preprocessor(a.size, a.size)
    m = pre.grid[0] * pre.grid[1]
    lams = list(a.lams) + [0.3 * m]  # 0.3 on the patch-averaged reconstruction
    run = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "data": str(a.data),
           "shots": a.shots, "splits": a.splits, "seed": a.seed, "lams": lams,
           "backbone": {**bb.info.to_json(), "source": resolved.source}}
    records = []
    for cat in find_categories(a.data, a.categories):
        store = FeatureStore(bb, pre)
        labels = np.array([t.defective for t in cat.test])
        truth = pixel_truth(cat, pre)
        for lam in [None, *lams]:  # None: PatchCore, the reference
            spec = MethodSpec("patchcore") if lam is None else MethodSpec("patchcore+", params={"lam": lam})
            per_split = [split_metrics(run_split(cat, store, spec, a.shots, s, a.seed), labels, truth, pre.crop_hw)
                         for s in range(a.splits)]
            label = spec.name if lam is None else f"patchcore+ lam={lam:g}"
            records.append({"method": label, "category": cat.name, "shots": a.shots, "splits": a.splits,
                            "params": spec.params, "metrics": summarise(per_split)})
            print(accuracy_table(records[-1:]).splitlines()[-1], flush=True)
            write_results(a.out / "results.json", run, records)
            atomic.write_bytes(a.out / "results.md", accuracy_table(records).encode())
    print(accuracy_table(records))


if __name__ == "__main__":
    main()
