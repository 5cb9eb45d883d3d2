"""PatchCore+ readings and the transport term's suppression diagnostic, on real data with masks.

    OPENBLAS_NUM_THREADS=1 python benchmarks/patchcore_plus_ablation.py --data ../shared/data \\
        --backbone effnet-expand-tf.onnx --shots 2 --splits 5 \\
        --variants patchcore vanilla "patchcore+" "patchcore+:lam=0" "patchcore+:lam_scale=mean,mstep=closed" \\
        --cache /tmp/feats --out benchmarks/results/patchcore_plus_readings

A variant is ``name[/preset][:key=value,...]`` (values parsed as JSON, else strings), e.g.
``patchcore+:lam_scale=mean,mstep=closed,eps_rel=0.05``. Every variant runs on the same features,
support draws (``edge_app/evaluation/protocol.draw_split``) and test images as `edge-foct eval`; this script
reports image AUROC only (no threshold, no pixel maps: `edge-foct eval` gives those for the chosen
variants), which is what the leave-one-category-out selection (``patchcore_plus_loco.py``) reads.

Suppression diagnostic (every patchcore+ variant with lam > 0, defective test images with a mask):
a grid cell is a defect cell when at least half of it is inside the ground-truth mask. For each
such image the refinement is run twice on the same prototypes, with the variant's transport term
and with lam = 0 (nothing else changed), and compared, separately over defect and normal cells:

- ``own_def`` / ``own_norm``: mean ||f_j - (W M)_j||^2 with the term / without it (ratio of means
  per image, then the median over images). > 1: the refined prototype of a cell sits farther from
  that cell's feature with the term, i.e. it took less of the feature in. Suppression of the
  anomaly means ``own_def`` > ``own_norm`` (the defect's features are taken in less than the
  normal ones), and ``near_*`` the same for the nearest refined prototype (the score's distance).
- ``cost_share``: the share of the transport cost <T, C> carried by defect columns, divided by the
  defect cells' share of the columns (1: no different from normal cells; balanced marginals give
  every column mass 1/m, so the plan can only single defects out through the cost).

Features are cached per category as .npy (float32, memory-mapped) under --cache, keyed by the
backbone's sha256 and the input size. Writes ``results.json`` (per category, shots, split and
variant: image AUROC, the diagnostic) and prints the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edge_foct.edge_app.backbones import resolve_backbone
from edge_foct.edge_app.datasets.mvtec import Category, find_categories
from edge_foct.edge_app.evaluation.protocol import FeatureStore, draw_split, ground_truth
from edge_foct.edge_app.machine_info import machine_info
from edge_foct.edge_app.evaluation.metrics import auroc
from edge_foct.runtime import atomic
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.methods import SupportSet, make_params, method_class
from edge_foct.runtime.methods.patchcore_plus import PatchCorePlus, Refinement, refine
from edge_foct.runtime.preprocess import Preprocessor


def parse_variant(spec: str) -> tuple[str, str | None, dict]:
    """``name[/preset][:k=v,...]`` -> (name, preset, overrides)."""
    head, _, tail = spec.partition(":")
    name, _, preset = head.partition("/")
    params = {}
    for kv in filter(None, tail.split(",")):
        k, _, v = kv.partition("=")
        try:
            params[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            params[k.strip()] = v.strip()
    return name, preset or None, params


def cached_features(cat: Category, store: FeatureStore, sha: str, size: int, cache: Path,
                    train_idx: list[int]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(N_test, Q, D) memory-mapped test features and {train index: (Q, D)} for the draws used."""
    cache.mkdir(parents=True, exist_ok=True)
    stem = cache / f"{sha[:16]}_{size}_{cat.name}"
    test_f, train_f = stem.with_suffix(".test.npy"), stem.with_suffix(".train.npz")
    if not test_f.is_file():
        feats = np.stack([store[t.path] for t in cat.test]).astype(np.float32)
        tmp = test_f.with_suffix(".tmp.npy")
        np.save(tmp, feats)
        tmp.replace(test_f)
        del feats
        store._feats.clear()
    have = dict(np.load(train_f)) if train_f.is_file() else {}
    missing = [i for i in train_idx if str(i) not in have]
    if missing:
        have.update({str(i): store[cat.train[i]] for i in missing})
        tmp = train_f.with_suffix(".tmp.npz")
        np.savez(tmp, **have)
        tmp.replace(train_f)
    return np.load(test_f, mmap_mode="r"), {int(k): v for k, v in have.items()}


def defect_cells(gt: list[np.ndarray | None], grid: tuple[int, int]) -> list[np.ndarray | None]:
    """Per test image: (Q,) bool, a cell is a defect cell when >= half of it is in the mask; None
    for good images and defects without a usable mask."""
    out = []
    for g in gt:
        if g is None or not g.any():
            out.append(None)
            continue
        frac = cv2.resize(g.astype(np.float32), (grid[1], grid[0]), interpolation=cv2.INTER_AREA)
        cells = frac.reshape(-1) >= 0.5
        out.append(cells if cells.any() and not cells.all() else None)
    return out


def suppression(f: np.ndarray, method: PatchCorePlus, with_t: Refinement, cells: np.ndarray) -> dict[str, float]:
    """The diagnostic for one defective query f (Q, D) with defect cells (Q,) bool; ``with_t`` is
    the method's own refinement of f (the one its score came from)."""
    without = refine(f, method._protos, dataclasses.replace(method.params, lam=0.0))
    out = {}
    for key, fn in (("own", "own_residuals"), ("near", "nearest_refined")):
        a, b = getattr(with_t, fn)(f), getattr(without, fn)(f)
        for part, sel in (("def", cells), ("norm", ~cells)):
            out[f"{key}_{part}"] = float(a[sel].mean() / max(b[sel].mean(), 1e-12))
    tc = (with_t.plan * with_t.cost).sum(axis=0)  # (m,) transport cost per refined prototype
    out["cost_share"] = float(tc[cells].sum() / tc.sum() / cells.mean())
    return out


def image_score(method, f: np.ndarray, cells: np.ndarray | None, diags: list | None) -> float:
    """The method's image score of f (Q, D); for a PatchCore+ with the term and a masked defective
    image, the diagnostic from the same refinement is appended to ``diags`` (None: no diagnostic)."""
    if not (isinstance(method, PatchCorePlus) and method.params.lam > 0 and cells is not None
            and diags is not None):
        return float(method.score(f, update=False).scores.max())
    r = refine(f, method._protos, method.params)
    s = r.nearest_refined(f) if method.params.score == "nearest" else r.own_residuals(f)
    diags.append(suppression(f, method, r, cells))
    return float(s.max())


def run_variant(spec: str, cat: Category, test: np.ndarray, train: dict[int, np.ndarray], shots: int, split: int,
                seed: int, grid: tuple[int, int], cells: list[np.ndarray | None], diagnostic: bool = True) -> dict:
    name, preset, over = parse_variant(spec)
    cls = method_class(name)
    params = make_params(name, over, preset)
    support_paths, _ = draw_split(cat, shots, split, seed)
    idx = [cat.train.index(p) for p in support_paths]
    method = cls.fit(SupportSet(np.stack([train[i] for i in idx]), None, grid), params)
    labels = np.array([t.defective for t in cat.test])
    t0 = time.perf_counter()
    diags: list[dict] | None = [] if diagnostic else None
    scores = np.array([image_score(method, np.asarray(test[i], np.float32), cells[i], diags)
                       for i in range(len(cat.test))])
    rec = {"image_auroc": auroc(labels, scores), "seconds_per_image": (time.perf_counter() - t0) / len(scores)}
    if diags:
        rec["suppression"] = {k: float(np.median([d[k] for d in diags])) for k in diags[0]}
        rec["suppression"]["images"] = len(diags)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--categories", nargs="+", default=None)
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--variants", nargs="+", required=True)
    ap.add_argument("--shots", type=int, nargs="+", default=[2])
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-diagnostic", action="store_true",
                    help="image AUROC only (a reading sweep): no second refinement per defective image")
    a = ap.parse_args()
    for v in a.variants:  # fail on a bad spec before any feature is computed
        name, preset, over = parse_variant(v)
        make_params(name, over, preset)
    resolved = resolve_backbone(a.backbone)
    bb = Backbone.load(resolved.path)
    pre = Preprocessor(a.size, a.size)
    run = {"command": " ".join(["python", "benchmarks/" + Path(sys.argv[0]).name, *sys.argv[1:]]),
           "data": str(a.data), "shots": a.shots, "splits": a.splits, "seed": a.seed, "variants": a.variants,
           "backbone": {**bb.info.to_json(), "source": resolved.source}, "machine": machine_info()}
    out_file = a.out / "results.json"
    records = json.loads(out_file.read_text())["records"] if out_file.is_file() else []
    done = {(r["category"], r["shots"], r["split"], r["variant"]) for r in records}
    t_start = time.time()
    for cat in find_categories(a.data, a.categories):
        draws = {(k, s): draw_split(cat, k, s, a.seed)[0] for k in a.shots for s in range(a.splits)}
        train_idx = sorted({cat.train.index(p) for ps in draws.values() for p in ps})
        test, train = cached_features(cat, FeatureStore(bb, pre), bb.info.sha256, a.size, a.cache, train_idx)
        cells = defect_cells(ground_truth(cat, pre), pre.grid)
        for k in a.shots:
            for v in a.variants:
                for s in range(a.splits):
                    if (cat.name, k, s, v) in done:
                        continue
                    rec = run_variant(v, cat, test, train, k, s, a.seed, pre.grid, cells, not a.no_diagnostic)
                    records.append({"category": cat.name, "shots": k, "split": s, "variant": v, **rec})
                    run["wall_seconds"] = round(time.time() - t_start, 1)
                    atomic.write_bytes(out_file, json.dumps({"run": run, "records": records}, indent=1).encode())
                print(table(records, [cat.name], [k], [v]).splitlines()[-1], flush=True)
    print(table(records, sorted({r["category"] for r in records}), a.shots, a.variants))


def table(records: list[dict], cats: list[str], shots: list[int], variants: list[str]) -> str:
    """Markdown: per category, shots and variant, image AUROC mean ± std over splits and the
    diagnostic's medians (mean over splits)."""
    lines = ["| category | shots | variant | img AUROC | own def / norm | nearest def / norm | cost share |",
             "|---|---|---|---|---|---|---|"]
    for c in cats:
        for k in shots:
            for v in variants:
                rs = [r for r in records if (r["category"], r["shots"], r["variant"]) == (c, k, v)]
                if not rs:
                    continue
                au = 100 * np.array([r["image_auroc"] for r in rs])
                sup = [r["suppression"] for r in rs if "suppression" in r]
                d = {key: np.mean([x[key] for x in sup]) for key in sup[0]} if sup else None
                diag = (f"{d['own_def']:.3f} / {d['own_norm']:.3f} | {d['near_def']:.3f} / {d['near_norm']:.3f} | "
                        f"{d['cost_share']:.2f}") if d else "| |"
                lines.append(f"| {c} | {k} | {v} | {au.mean():.1f} ± {au.std(ddof=1) if len(au) > 1 else 0:.1f} "
                             f"| {diag} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
