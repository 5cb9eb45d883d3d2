"""The fold table of issue 13 from one or more `edge-foct eval` result folders.

    python benchmarks/fold_table.py RESULTS_DIR [RESULTS_DIR ...] --out benchmarks/results/fold_table
    python benchmarks/fold_table.py --base benchmarks/results/fold_table/fold_table.json NEW_DIR ... --out ...

Reads each folder's results.json (records of category x shots x method; a later folder's record
replaces an earlier one's for the same key; ``--base``: an earlier fold_table.json's records and
runs come first, so new eval folders add rows to a committed table without its eval folders), writes fold_table.md / fold_table.json: per category
and shots, image / pixel AUROC (mean ± std over splits) of every method, foct/edge minus oct with
the larger of their split stds (the noise), how many splits the foreground judge kept the fg/bg
split, and the mean over categories with foct/edge and patchcore+ against patchcore. Each eval
run's command, backbone kernels and machine are copied into the JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_foct.runtime import atomic

ORDER = ("patchcore", "ct", "oct", "foct/edge", "patchcore+")


def load(folders: list[Path], base: Path | None = None) -> tuple[dict[tuple[str, int, str], dict], list[dict[str, Any]]]:
    records, runs = {}, []
    if base is not None:
        data = json.loads(base.read_text())
        runs.extend(data["runs"])
        records.update({(r["category"], r["shots"], r["method"]): r for r in data["records"]})
    for f in folders:
        data = json.loads((f / "results.json").read_text())
        run = data["run"]
        runs.append({k: run.get(k) for k in ("command", "started", "wall_seconds", "machine", "load_average_end")}
                    | {"kernels": run["backbone"].get("kernels"), "backbone": run["backbone"].get("name"),
                       "engine": run["backbone"].get("engine")})
        for r in data["records"]:
            records[(r["category"], r["shots"], r["method"])] = r | {"source": run.get("command")}
    for r in records.values():  # a base table's records predate the tag: the last run that covered them
        if not r.get("source"):
            r["source"] = next((run["command"] for run in reversed(runs) if covers(run["command"], r)), None)
    for run in runs:  # how many of the table's records each run supplies now (0: superseded by a later run)
        run["records_in_table"] = sum(r.get("source") == run["command"] for r in records.values())
    return records, runs


def covers(command: str | None, r: dict) -> bool:
    """Whether an `edge-foct eval` command line ran record r's category, shots and method."""
    if not command:
        return False
    opts: dict[str, list[str]] = {}
    key = None
    for tok in command.split():
        if tok.startswith("--"):
            key = tok[2:]
            opts[key] = []
        elif key is not None:
            opts[key].append(tok)
    cats, shots, methods = opts.get("categories"), opts.get("shots", ["1", "2", "4"]), opts.get("methods", [])
    return (cats is None or r["category"] in cats) and str(r["shots"]) in shots and r["method"] in methods


def cell(r: dict | None, key: str) -> str:
    m = (r or {}).get("metrics", {}).get(key)
    if not m or m.get("mean") is None:
        return "–"
    return f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f}"


def mean_of(r: dict | None, key: str) -> float:
    m = (r or {}).get("metrics", {}).get(key)
    return float("nan") if not m or m.get("mean") is None else 100 * m["mean"]


def std_of(r: dict | None, key: str) -> float:
    m = (r or {}).get("metrics", {}).get(key)
    return float("nan") if not m or m.get("std") is None else 100 * m["std"]


def fg_cell(r: dict | None) -> str:
    m = (r or {}).get("metrics", {}).get("foreground_split_used")
    if not m:
        return "–"
    vals = [v for v in m["per_split"] if v is not None]
    return f"{int(sum(vals))}/{len(vals)}"


def table(records: dict, methods: list[str]) -> tuple[str, dict[str, Any]]:
    cats = sorted({k[0] for k in records})
    shots = sorted({k[1] for k in records})
    head = ["category", "shots"] + [f"{m} img / px" for m in methods] + ["foct − oct img (noise)", "fg split used"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summary: dict[str, Any] = {"per_category": [], "mean": []}
    for c in cats:
        for k in shots:
            row = [c, str(k)]
            for m in methods:
                r = records.get((c, k, m))
                row.append(f"{cell(r, 'image_auroc')} / {cell(r, 'pixel_auroc')}" if r else "–")
            f, o = records.get((c, k, "foct/edge")), records.get((c, k, "oct"))
            delta = mean_of(f, "image_auroc") - mean_of(o, "image_auroc")
            noise = max(std_of(f, "image_auroc"), std_of(o, "image_auroc"))
            row.append("–" if np.isnan(delta) else f"{delta:+.1f} ({noise:.1f})" + (" **below**" if delta < -noise else ""))
            row.append(fg_cell(f))
            lines.append("| " + " | ".join(row) + " |")
            summary["per_category"].append({"category": c, "shots": k, "foct_minus_oct_image": delta, "noise": noise,
                                            "splits_using_mask": fg_cell(f)})
    lines += ["", "Mean over the categories present for every method (image / pixel AUROC):", "",
              "| shots | " + " | ".join(methods) + " | foct/edge − patchcore | patchcore+ − patchcore |",
              "|" + "---|" * (len(methods) + 3)]
    for k in shots:
        common = [c for c in cats if all((c, k, m) in records for m in methods)]
        means = {m: (np.mean([mean_of(records[(c, k, m)], "image_auroc") for c in common]),
                     np.nanmean([mean_of(records[(c, k, m)], "pixel_auroc") for c in common])) for m in methods}
        row = [f"{k} ({len(common)} cat.)"] + [f"{means[m][0]:.1f} / {means[m][1]:.1f}" for m in methods]
        for m in ("foct/edge", "patchcore+"):
            if m in means and "patchcore" in means:
                row.append(f"{means[m][0] - means['patchcore'][0]:+.1f} / {means[m][1] - means['patchcore'][1]:+.1f}")
            else:
                row.append("–")
        lines.append("| " + " | ".join(row) + " |")
        summary["mean"].append({"shots": k, "categories": common, **{m: {"image_auroc": means[m][0],
                                                                        "pixel_auroc": means[m][1]} for m in methods}})
    return "\n".join(lines) + "\n", summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", type=Path, nargs="*")
    ap.add_argument("--base", type=Path, help="an earlier fold_table.json whose records and runs come first")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--methods", nargs="*", default=list(ORDER), help="methods to show (default: all found)")
    a = ap.parse_args()
    if not a.folders and a.base is None:
        ap.error("give eval result folders and/or --base")
    records, runs = load(a.folders, a.base)
    records = {k: v for k, v in records.items() if k[2] in a.methods}
    methods = [m for m in ORDER if any(k[2] == m for k in records)]
    md, summary = table(records, methods)
    a.out.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(a.out / "fold_table.md", md.encode())
    atomic.write_json(a.out / "fold_table.json", {"runs": runs, "summary": summary,
                                                  "records": [records[k] for k in sorted(records)]})
    print(md)


if __name__ == "__main__":
    main()
