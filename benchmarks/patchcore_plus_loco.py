"""Leave-one-category-out choice of a PatchCore+ variant, and its held-out image AUROC.

    python benchmarks/patchcore_plus_loco.py benchmarks/results/patchcore_plus_eval/results.json \\
        --candidates "patchcore+" "patchcore+/no-ot" "patchcore+/mean-closed" --shots 2 \\
        --references patchcore vanilla

Reads an `edge-foct eval` results.json (records: method, category, shots, metrics.image_auroc
.per_split) or a ``patchcore_plus_ablation.py`` one (records: variant, category, shots, split,
image_auroc). For each category c (the fold) the candidate with the highest mean image AUROC over
the OTHER categories (every shots value given, every split) is chosen, and its AUROC on c is the
held-out number: no number in the last columns was seen by the choice that produced it. Ties go
to the candidate listed first. Prints the fold table and the held-out means beside the references.

``--compare A B`` (repeatable) prints the issue's target table instead: per shots value, A minus B
in image AUROC, mean over categories and per category, and the splits where A >= B. Several
results files may be given (e.g. two `edge-foct eval` runs over different categories).

``--table`` prints, from `edge-foct eval` results only, one row per category, shots and method:
image / pixel AUROC, F1-max, AUPRO, the learnt threshold's false alarms / misses, and for an
online method the test images it admitted (defective / good), then the means over categories.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def load(path: Path) -> dict[tuple[str, str, int], list[float]]:
    """{(method, category, shots): per-split image AUROC (0-1)} from either results format."""
    recs = json.loads(path.read_text())["records"]
    out: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for r in recs:
        if "variant" in r:
            out[(r["variant"], r["category"], r["shots"])].append(r["image_auroc"])
        else:
            out[(r["method"], r["category"], r["shots"])] = list(r["metrics"]["image_auroc"]["per_split"])
    return out


def mean_auroc(data, method: str, cats: list[str], shots: list[int]) -> float:
    """Mean over categories of the mean over shots and splits (each category weighs the same)."""
    per_cat = [np.mean([v for k in shots for v in data[(method, c, k)]]) for c in cats]
    return float(np.mean(per_cat))


def loco(data, candidates: list[str], cats: list[str], shots: list[int]) -> list[dict]:
    folds = []
    for c in cats:
        train = [x for x in cats if x != c]
        scores = {m: mean_auroc(data, m, train, shots) for m in candidates}
        best = max(candidates, key=lambda m: (scores[m], -candidates.index(m)))
        folds.append({"held_out": c, "chosen": best, "train_auroc": scores[best], "scores": scores,
                      "held_out_auroc": mean_auroc(data, best, [c], shots)})
    return folds


def compare(data, x: str, y: str, cats: list[str], shots: list[int]) -> str:
    """Markdown: x - y image AUROC (points) per shots value: mean, per category, splits x >= y."""
    lines = [f"`{x}` minus `{y}`, image AUROC (points), mean over splits", "",
             "| shots | delta (mean) | " + " / ".join(cats) + " | categories x >= y | splits x >= y |",
             "|---|---|---|---|---|"]
    for k in shots:
        d = [100 * (np.mean(data[(x, c, k)]) - np.mean(data[(y, c, k)])) for c in cats]
        wins = sum(np.array(data[(x, c, k)]) >= np.array(data[(y, c, k)]) for c in cats)
        n = sum(len(data[(x, c, k)]) for c in cats)
        lines.append(f"| {k} | {np.mean(d):+.2f} | " + " / ".join(f"{v:+.1f}" for v in d)
                     + f" | {sum(v >= 0 for v in d)} of {len(cats)} | {int(np.sum(wins))} of {n} |")
    return "\n".join(lines) + "\n"


def eval_table(paths: list[Path], methods: list[str] | None, shots: list[int]) -> str:
    """Markdown table of `edge-foct eval` records (mean ± std over splits, %), plus per-shots means."""
    recs = [r for p in paths for r in json.loads(p.read_text())["records"] if "metrics" in r]
    methods = methods or sorted({r["method"] for r in recs})
    by = {(r["category"], r["shots"], r["method"]): r["metrics"] for r in recs}
    cats = sorted({r["category"] for r in recs})
    cols = ("image_auroc", "pixel_auroc", "image_f1_max", "pixel_f1_max", "aupro")
    lines = ["| category | shots | method | img AUROC | px AUROC | img F1max | px F1max | AUPRO@0.3 | "
             "false alarms / misses @thr | admitted def / good |", "|---|---|---|---|---|---|---|---|---|---|"]
    means: dict[tuple[int, str], list[list[float]]] = defaultdict(list)
    for c in cats:
        for k in shots:
            for m in methods:
                x = by.get((c, k, m))
                if x is None:
                    continue
                cells = [f"{100 * x[col]['mean']:.1f} ± {100 * x[col]['std']:.1f}" if col in x else "–" for col in cols]
                means[(k, m)].append([100 * x[col]["mean"] if col in x else np.nan for col in cols])
                fa = f"{100 * x['false_alarm_rate']['mean']:.0f}% / {100 * x['miss_rate']['mean']:.0f}%"
                adm = (f"{x['admitted_defective']['mean']:.1f} / {x['admitted_good']['mean']:.1f}"
                       if "admitted_good" in x else "")
                lines.append(f"| {c} | {k} | {m} | " + " | ".join(cells) + f" | {fa} | {adm} |")
    for k, m in [(k, m) for k in shots for m in methods if (k, m) in means]:
        rows = means[(k, m)]
        if len(rows) == len(cats):
            mean = np.nanmean(np.array(rows), axis=0)
            lines.append(f"| **mean ({len(cats)})** | {k} | {m} | " + " | ".join(f"{v:.1f}" for v in mean) + " | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="+")
    ap.add_argument("--candidates", nargs="+", default=[])
    ap.add_argument("--compare", nargs=2, action="append", default=[], metavar=("A", "B"))
    ap.add_argument("--references", nargs="*", default=["patchcore", "vanilla"])
    ap.add_argument("--shots", type=int, nargs="+", default=[2])
    ap.add_argument("--json", type=Path, default=None, help="also write the folds here")
    ap.add_argument("--table", action="store_true", help="the per-category metrics table of eval results")
    ap.add_argument("--methods", nargs="+", default=None, help="--table: these methods, in this order")
    a = ap.parse_args()
    if a.table:
        print(eval_table(a.results, a.methods, a.shots))
        return
    data = {}
    for path in a.results:
        data.update(load(path))
    cats = sorted({c for (_, c, _) in data})
    if a.compare:
        for x, y in a.compare:
            print(compare(data, x, y, cats, a.shots))
        return
    missing = [(m, c, k) for m in a.candidates + a.references for c in cats for k in a.shots if (m, c, k) not in data]
    if missing:
        raise SystemExit(f"no results for {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    folds = loco(data, a.candidates, cats, a.shots)
    shots = "/".join(map(str, a.shots))
    print(f"Leave-one-category-out, image AUROC (%), shots {shots}, mean over the splits\n")
    head = ["held-out category", "chosen on the other 4", *[f"{m} (train)" for m in a.candidates],
            "chosen, held-out", *a.references]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for f in folds:
        refs = [f"{100 * mean_auroc(data, r, [f['held_out']], a.shots):.1f}" for r in a.references]
        row = [f["held_out"], f"`{f['chosen']}`", *[f"{100 * f['scores'][m]:.2f}" for m in a.candidates],
               f"**{100 * f['held_out_auroc']:.1f}**", *refs]
        print("| " + " | ".join(row) + " |")
    held = np.mean([f["held_out_auroc"] for f in folds])
    refs = [f"{100 * mean_auroc(data, r, cats, a.shots):.1f}" for r in a.references]
    print("| **mean** | | " + " | " * len(a.candidates) + f"**{100 * held:.1f}** | " + " | ".join(refs) + " |")
    if a.json:
        a.json.write_text(json.dumps({"shots": a.shots, "candidates": a.candidates, "folds": folds}, indent=1))


if __name__ == "__main__":
    main()
