"""Support augmentation, measured and chosen leave-one-category-out.

    python benchmarks/support_augment_loco.py benchmarks/results/support_augment/2shot/results.json \\
        [more results.json ...] [--criterion image_auroc|error] [--margin 0.0]

Reads `edge-foct eval --augment none,flip,... ` results (records: ``method`` = ``name[/preset][@spec]``,
``augment``, ``category``, ``shots``, ``metrics``). Per base method and shots value:

1. the per-category table: every spec beside ``none`` (image / pixel AUROC, false alarms / misses at
   the learnt threshold, the method's ms per image: the memory grows with the copies);
2. the fold table: for each category c, the spec with the best mean criterion over the OTHER four
   categories (image AUROC, higher is better; or ``error`` = false alarms + misses at the learnt
   threshold, lower is better) is chosen, ``none`` unless a spec beats it by more than ``--margin``
   there; its result on c is the held-out number, beside ``none``'s on c. No held-out number was seen
   by the choice that produced it.

Verdict: a spec becomes the default only when every fold chooses it AND its held-out mean beats
``none``'s; otherwise the default stays ``none`` (a per-category win the folds do not back is not a
default).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

#: the five categories of ../shared/data: fewer, and no default is decided
MIN_CATEGORIES = 5
#: criterion -> (metric key, sign: +1 higher is better)
CRITERIA = {"image_auroc": ("image_auroc", +1), "error": ("error", -1)}


def load(paths: list[Path]) -> tuple[dict, dict]:
    """{(base method, spec, category, shots): metrics} and the run headers by file."""
    data, runs = {}, {}
    for p in paths:
        got = json.loads(p.read_text())
        runs[str(p)] = got["run"]
        for r in got["records"]:
            spec = r.get("augment", "none")
            base = r["method"].split("@")[0]
            data[(base, spec, r["category"], r["shots"])] = r["metrics"]
    return data, runs


def mean(m: dict, key: str) -> float:
    v = m.get(key, {}).get("mean")
    return float("nan") if v is None else float(v)


def per_category(data, base: str, shots: int, specs: list[str], cats: list[str]) -> str:
    lines = [f"#### {base}, {shots} shots (mean of the splits; delta = spec - none, image AUROC points)", "",
             "| category | augment | img AUROC | delta | px AUROC | false alarms / misses @thr | ms/img (method) |",
             "|---|---|---|---|---|---|---|"]
    for c in cats:
        ref = data[(base, "none", c, shots)]
        for s in specs:
            m = data.get((base, s, c, shots))
            if m is None:
                continue
            d = 100 * (mean(m, "image_auroc") - mean(ref, "image_auroc"))
            lines.append(f"| {c} | {s} | {100 * mean(m, 'image_auroc'):.1f} | "
                         f"{'' if s == 'none' else f'{d:+.1f}'} | {100 * mean(m, 'pixel_auroc'):.1f} | "
                         f"{100 * mean(m, 'false_alarm_rate'):.0f}% / {100 * mean(m, 'miss_rate'):.0f}% | "
                         f"{1e3 * mean(m, 'seconds_per_image'):.1f} |")
    lines.append("")
    lines.append("| mean over categories | augment | img AUROC | delta | px AUROC | false alarms / misses @thr | ms/img |")
    lines.append("|---|---|---|---|---|---|---|")
    for s in specs:
        ms = [data[(base, s, c, shots)] for c in cats if (base, s, c, shots) in data]
        if len(ms) != len(cats):
            continue
        refs = [data[(base, "none", c, shots)] for c in cats]
        avg = lambda k, xs: float(np.nanmean([mean(x, k) for x in xs]))  # noqa: E731
        d = 100 * (avg("image_auroc", ms) - avg("image_auroc", refs))
        lines.append(f"| {len(cats)} categories | {s} | {100 * avg('image_auroc', ms):.1f} | "
                     f"{'' if s == 'none' else f'{d:+.2f}'} | {100 * avg('pixel_auroc', ms):.1f} | "
                     f"{100 * avg('false_alarm_rate', ms):.0f}% / {100 * avg('miss_rate', ms):.0f}% | "
                     f"{1e3 * avg('seconds_per_image', ms):.1f} |")
    return "\n".join(lines) + "\n"


def loco(data, base: str, shots: int, specs: list[str], cats: list[str], criterion: str,
         margin: float) -> tuple[list[dict], str]:
    key, sign = CRITERIA[criterion]
    score = lambda s, cs: sign * float(np.mean([mean(data[(base, s, c, shots)], key) for c in cs]))  # noqa: E731
    folds = []
    for c in cats:
        train = [x for x in cats if x != c]
        on_train = {s: score(s, train) for s in specs}
        best = max(specs, key=lambda s: (on_train[s], s == "none"))
        if on_train[best] - on_train["none"] <= margin / 100:
            best = "none"
        folds.append({"held_out": c, "chosen": best, "train": {s: sign * v for s, v in on_train.items()},
                      "held_out_chosen": sign * score(best, [c]), "held_out_none": sign * score("none", [c])})
    chosen = {f["chosen"] for f in folds}
    held = float(np.mean([f["held_out_chosen"] for f in folds]))
    none = float(np.mean([f["held_out_none"] for f in folds]))
    better = sign * (held - none) > 0
    default = chosen.pop() if len(chosen) == 1 and better else "none"
    return folds, default


def fold_table(folds: list[dict], specs: list[str], base: str, shots: int, criterion: str, default: str) -> str:
    unit = "image AUROC %" if criterion == "image_auroc" else "false alarms + misses @thr, % points"
    lines = [f"#### {base}, {shots} shots: leave-one-category-out on {criterion} ({unit})", "",
             "| held-out category | chosen on the other 4 | " + " | ".join(f"{s} (other 4)" for s in specs)
             + " | chosen, held-out | none, held-out |", "|" + "---|" * (len(specs) + 4)]
    for f in folds:
        lines.append(f"| {f['held_out']} | `{f['chosen']}` | "
                     + " | ".join(f"{100 * f['train'][s]:.2f}" for s in specs)
                     + f" | **{100 * f['held_out_chosen']:.1f}** | {100 * f['held_out_none']:.1f} |")
    held = np.mean([f["held_out_chosen"] for f in folds])
    none = np.mean([f["held_out_none"] for f in folds])
    lines.append(f"| **mean** | | " + " | " * len(specs) + f"**{100 * held:.2f}** | {100 * none:.2f} |")
    lines += ["", f"Default for {base} at {shots} shots by this criterion: **`{default}`** "
              f"({'every fold chose it and it beats none held-out' if default != 'none' else 'the folds do not back any spec'})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="+")
    ap.add_argument("--criterion", choices=sorted(CRITERIA), action="append", default=None)
    ap.add_argument("--margin", type=float, default=0.0, help="points a spec must win by on the other 4")
    ap.add_argument("--json", type=Path, default=None, help="also write the folds and verdicts here")
    a = ap.parse_args()
    data, runs = load(a.results)
    criteria = a.criterion or ["image_auroc", "error"]
    bases = list(dict.fromkeys(b for (b, _, _, _) in data))
    out, verdicts = [], []
    for base in bases:
        for shots in sorted({k for (b, _, _, k) in data if b == base}):
            cats = sorted({c for (b, _, c, k) in data if b == base and k == shots})
            specs = list(dict.fromkeys(s for (b, s, _, k) in data if b == base and k == shots))
            specs = ["none"] + [s for s in specs if s != "none"]
            full = [s for s in specs if all((base, s, c, shots) in data for c in cats)]
            out.append(per_category(data, base, shots, specs, cats))
            if len(cats) < MIN_CATEGORIES or "none" not in full:
                out.append(f"No fold table for {base} at {shots} shots: {len(cats)} categories measured "
                           f"(a default is decided on {MIN_CATEGORIES}, one held out at a time).\n")
                continue
            for crit in criteria:
                folds, default = loco(data, base, shots, full, cats, crit, a.margin)
                out.append(fold_table(folds, full, base, shots, crit, default))
                verdicts.append({"method": base, "shots": shots, "criterion": crit, "default": default, "folds": folds})
    text = "\n".join(out)
    print(text)
    if a.json:
        a.json.write_text(json.dumps({"runs": runs, "verdicts": verdicts}, indent=1))


if __name__ == "__main__":
    main()
