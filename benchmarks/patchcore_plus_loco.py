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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--candidates", nargs="+", required=True)
    ap.add_argument("--references", nargs="*", default=["patchcore", "vanilla"])
    ap.add_argument("--shots", type=int, nargs="+", default=[2])
    ap.add_argument("--json", type=Path, default=None, help="also write the folds here")
    a = ap.parse_args()
    data = load(a.results)
    cats = sorted({c for (_, c, _) in data})
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
