"""FOCT accuracy benchmark and tuning tool: methods side by side on the same features and streams.

    python benchmarks/accuracy_foct.py --data ../shared/data --splits 5 --seed 0 \\
        --method patchcore --method ct/edge --method oct/edge --method foct/edge \\
        --method "foct/edge:tau_ratio=0.5,gate_patch_ratio=0.5" --out benchmarks/results/foct_x.json

A method is ``name[/preset][:key=value,...]`` (values parsed as JSON, else strings). Protocol:
edge_app/evaluation/protocol.py (2-shot support draws per split, threshold from normal images, test images
streamed once in a fixed shuffled order, shared by every method; the same features for all).
``--subset N`` keeps N test images per category (half good, half defective, evenly spaced in
the sorted list), for the expensive ``paper`` procedure. Image AUROC is cross-checked with
scikit-learn. Prints a Markdown table (mean over splits; Δ = image AUROC minus the first method's,
with the number of splits where it is >= 0) and writes every per-split number to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from edge_foct.edge_app.backbones import resolve_backbone
from edge_foct.edge_app.datasets.mvtec import find_categories
from edge_foct.edge_app.evaluation.protocol import (FeatureStore, MethodSpec, draw_split, ground_truth, pixel_truth,
                                         run_split, split_metrics)
from edge_foct.runtime import atomic, navigator
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.foreground import make_foreground
from edge_foct.runtime.methods import SupportSet, make_params, method_class
from edge_foct.runtime.preprocess import Preprocessor
from edge_foct.runtime.transport import concentration, transport_maps

COLUMNS = ("image_auroc", "pixel_auroc", "image_f1_max", "pixel_f1_max")


def parse_spec(text: str) -> tuple[str, MethodSpec]:
    head, _, tail = text.partition(":")
    name, _, preset = head.partition("/")
    params = {}
    for kv in filter(None, tail.split(",")):
        k, _, v = kv.partition("=")
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    spec = MethodSpec(name, preset or None, params)
    make_params(spec.name, spec.params, spec.preset)  # fail now on a typo
    return text, spec


def subset(cat, n: int):
    good = [t for t in cat.test if not t.defective]
    bad = [t for t in cat.test if t.defective]
    pick = lambda xs, k: [xs[i] for i in np.linspace(0, len(xs) - 1, min(k, len(xs))).round().astype(int)]  # noqa: E731
    return dataclasses.replace(cat, test=tuple(pick(good, n // 2) + pick(bad, n - n // 2)))


def defect_cells(cat, pre: Preprocessor) -> list[np.ndarray | None]:
    """Per test image: (h*w,) bool, the patch-grid cells holding any defect pixel (None: no mask)."""
    h, w = pre.grid
    s = pre.crop // h
    return [None if g is None else g.reshape(h, s, w, s).any((1, 3)).reshape(-1) for g in ground_truth(cat, pre)]


def admitted_defect_patches(diags: list[dict], cells: list) -> tuple[int, int]:
    """-> (admitted patches lying on a defect, all admitted patches), over a whole stream."""
    bad = sum(int(c[d["admitted_patches"]].sum()) for d, c in zip(diags, cells)
              if c is not None and d.get("admitted_patches"))
    return bad, sum(len(d.get("admitted_patches", ())) for d in diags)


def init_report(cat, store: FeatureStore, n: int, seed: int) -> list[dict]:
    """Concentration of the authors' navigator at its torch-default init, full and reduced width,
    on n test images against split 0's ct memory (DESIGN.md 2.2: 'scale matters')."""
    sp, order = draw_split(cat, 2, 0, seed)
    mem = method_class("ct").fit(SupportSet(store.features(sp), None, store.pre.grid), make_params("ct")).memory
    out = []
    for i in order[:n]:
        q = store[cat.test[i].path]
        for hidden in ((16, 8), (512, 256)):
            d, _ = navigator.forward(navigator.torch_default_init(q.shape[1], hidden, seed=0), mem, q)
            out.append({"category": cat.name, "image": cat.test[i].path.name, "hidden": list(hidden),
                        "concentration": concentration(transport_maps(d)[1]), "uniform": 1.0 / len(mem),
                        "D_spread_per_patch": float(d.std(axis=0).mean())})
            print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    return out


def table(rows: dict, labels: list[str]) -> str:
    cats = sorted({c for c, _ in rows})
    for m in labels:  # "mean": per split, the mean over categories
        keys = set.intersection(*(set(rows[(c, m)]) for c in cats))
        rows[("mean", m)] = {k: list(np.nanmean([rows[(c, m)][k] for c in cats], axis=0)) for k in keys}
    out = ["| category | method | img AUROC | px AUROC | img F1 | px F1 | Δ img (splits >= 0) | concentration "
           "(1/M) | admitted images def/good | admitted patches on a defect / all | steps | ms/img |",
           "|" + "---|" * 12]
    for c in cats + ["mean"]:
        for m in labels:
            r = rows[(c, m)]
            d = np.array(r["image_auroc"]) - np.array(rows[(c, labels[0])]["image_auroc"])
            cell = lambda k: f"{np.nanmean(r[k]) * 100:.1f}" if k in r else "–"  # noqa: E731
            conc = f"{np.mean(r['concentration']):.3f} ({np.mean(r['uniform']):.4f})" if "concentration" in r else "–"
            adm = (f"{np.mean(r['admitted_defective']):.1f}/{np.mean(r['admitted_good']):.1f}"
                   if "admitted_defective" in r else "–")
            patches = (f"{np.mean(r['admitted_defect_patches']):.1f} / {np.mean(r['admitted_patches']):.0f}"
                       if "admitted_patches" in r else "–")
            steps = f"{np.mean(r['steps']):.0f}" if "steps" in r else "–"
            out.append(f"| {c} | {m} | " + " | ".join(cell(k) for k in COLUMNS)
                       + f" | {d.mean() * 100:+.2f} ({int((d >= -1e-12).sum())}/{len(d)}) | {conc} | {adm} | {patches}"
                       + f" | {steps} | {np.mean(r['seconds_per_image']) * 1e3:.1f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--categories", nargs="*", default=None)
    ap.add_argument("--method", action="append", required=True)
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--subset", type=int, default=0, help="test images per category (0: all)")
    ap.add_argument("--no-pixel", action="store_true", help="skip pixel metrics (faster tuning)")
    ap.add_argument("--init-report", type=int, default=0,
                    help="also report the paper navigator's concentration at init on this many images per category")
    ap.add_argument("--backbone", default=str(Path(__file__).resolve().parents[2] / "shared" / "weights"
                                              / "mobilenetv2-12-int8.onnx"))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    specs = [parse_spec(m) for m in a.method]
    bb = Backbone.load(resolve_backbone(a.backbone, taps="wide").path)
    pre = Preprocessor(a.size, a.size)
    fg = make_foreground()
    run = {"command": " ".join(["python", *sys.argv]), "shots": a.shots,
           "backbone": {**bb.info.to_json(), "path": Path(bb.info.path).name},  # no machine paths in records
           "splits": a.splits, "seed": a.seed, "size": a.size, "views": a.views, "subset": a.subset,
           "note": "2-core CPU shared with other jobs: ms/img are noisy"}
    rows, labels, t0 = {}, [s[0] for s in specs], time.perf_counter()
    for cat in find_categories(a.data, a.categories):
        cat = subset(cat, a.subset) if a.subset else cat
        store = FeatureStore(bb, pre)
        store.ensure([t.path for t in cat.test])
        truth = None if a.no_pixel else pixel_truth(cat, pre)
        cells = defect_cells(cat, pre)
        y = np.array([t.defective for t in cat.test])
        if a.init_report:
            run.setdefault("init_report", []).extend(init_report(cat, store, a.init_report, a.seed))
        for label, spec in specs:
            per = []
            uses_fg = method_class(spec.name).uses_foreground
            for split in range(a.splits):
                r = run_split(cat, store, spec, a.shots, split, a.seed, foreground=fg if uses_fg else None,
                              views=a.views)
                m = split_metrics(r, y, truth, pre.crop_hw)
                assert abs(m["image_auroc"] - roc_auc_score(y, r.image_scores)) < 1e-9
                if r.diagnostics and "admitted_patches" in r.diagnostics[0]:
                    m["admitted_defect_patches"], m["admitted_patches"] = admitted_defect_patches(r.diagnostics, cells)
                for key in ("uniform", "steps", "ct_loss", "tau"):
                    if r.diagnostics and key in r.diagnostics[0]:
                        m[key] = float(np.mean([dg[key] for dg in r.diagnostics]))
                per.append(m)
                print(f"{cat.name} {label} split {split}: img {m['image_auroc']:.4f}"
                      + (f" conc {m['concentration']:.3f}" if "concentration" in m else "")
                      + f" ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
            rows[(cat.name, label)] = {k: [p.get(k, float("nan")) for p in per] for k in per[0]}
        del store
        atomic.write_json(a.out, {"run": run, "results": [{"category": c, "method": m, "per_split": v}
                                                          for (c, m), v in rows.items()]})
    md = table(rows, labels)
    atomic.write_bytes(a.out.with_suffix(".md"), (f"`{run['command']}`\n\n" + md + "\n").encode())
    print(md)


if __name__ == "__main__":
    main()
