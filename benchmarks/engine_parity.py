"""Accuracy parity of backbone engines: `edge-foct eval` runs that differ only in ``--engine``.

    python benchmarks/engine_parity.py REF/results.json OTHER/results.json [...] [--out DIR]

The first file is the reference (ONNX Runtime f32). Per category / shots / method: the reference's
image AUROC (mean over splits) and each other run's difference in points, with the largest
per-split difference; a difference of 0.3 points or more is marked (issue 20's bar for OpenVINO).
Refuses runs that differ in anything but the engine (data, backbone sha256, shots, splits, seed,
input). Writes parity.md and parity.json under --out when given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_foct.edge_app.machine_info import describe
from edge_foct.runtime import atomic

BAR_POINTS = 0.3
SAME = ("data", "shots", "splits", "seed", "input", "methods", "categories")


def _key(r: dict) -> tuple:
    return r["category"], r["shots"], r["method"]


def _check_comparable(runs: list[dict]) -> None:
    ref = runs[0]["run"]
    for other in runs[1:]:
        o = other["run"]
        bad = [k for k in SAME if o.get(k) != ref.get(k)]
        if o["backbone"]["sha256"] != ref["backbone"]["sha256"]:
            bad.append("backbone sha256")
        if bad:
            raise SystemExit(f"runs differ in {bad}: not an engine comparison")


def parity(runs: list[dict]) -> tuple[list[dict], str]:
    """-> (rows, markdown). rows: one per record of the reference run."""
    _check_comparable(runs)
    engines = [r["run"]["backbone"]["engine"] for r in runs]
    by_key = [{_key(r): r for r in run["records"]} for run in runs]
    rows = []
    for key, ref in by_key[0].items():
        ref_auc = ref["metrics"]["image_auroc"]
        row = {"category": key[0], "shots": key[1], "method": key[2], "reference": ref_auc["mean"], "others": []}
        for run in by_key[1:]:
            auc = run[key]["metrics"]["image_auroc"]
            split_diffs = [abs(a - b) for a, b in zip(auc["per_split"], ref_auc["per_split"])
                           if a is not None and b is not None]
            row["others"].append({"mean": auc["mean"], "delta_points": 100 * (auc["mean"] - ref_auc["mean"]),
                                  "max_split_delta_points": 100 * max(split_diffs, default=float("nan"))})
        rows.append(row)
    head = ["category", "shots", "method", f"img AUROC {engines[0]}"]
    for e in engines[1:]:
        head += [f"{e}", "Δ points", "max Δ of a split"]
    lines = [f"{describe(runs[0]['run']['machine'])}", "",
             f"backbone {runs[0]['run']['backbone']['id']} (sha256 {runs[0]['run']['backbone']['sha256'][:12]}), "
             f"input {runs[0]['run']['input']['crop']} px; reference: {engines[0]}; marked (!): "
             f"|Δ| >= {BAR_POINTS} points", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["category"], str(row["shots"]), row["method"], f"{100 * row['reference']:.2f}"]
        for o in row["others"]:
            mark = " (!)" if abs(o["delta_points"]) >= BAR_POINTS else ""
            cells += [f"{100 * o['mean']:.2f}", f"{o['delta_points']:+.2f}{mark}",
                      f"{o['max_split_delta_points']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    worst = [max(abs(r["others"][i]["delta_points"]) for r in rows) for i in range(len(engines) - 1)]
    largest = ", ".join(f"{e}: {w:.2f} points" for e, w in zip(engines[1:], worst))
    lines += ["", f"Largest |Δ| over categories: {largest}"]
    return rows, "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path, help="results.json files; the first is the reference")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if len(args.results) < 2:
        raise SystemExit("give the reference run and at least one other")
    runs = [json.loads(p.read_text()) for p in args.results]
    rows, md = parity(runs)
    if args.out is not None:
        atomic.write_json(args.out / "parity.json", {"runs": [str(p) for p in args.results], "rows": rows,
                                                     "engines": [r["run"]["backbone"]["engine"] for r in runs]})
        atomic.write_bytes(args.out / "parity.md", md.encode())
    print(md)


if __name__ == "__main__":
    main()
