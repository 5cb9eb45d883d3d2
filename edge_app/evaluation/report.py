"""Benchmark reports: JSON records, Markdown tables, and ROC / score-histogram plots.

The record fields are documented in benchmarks/README.md. matplotlib (the ``eval`` extra) is
imported only when a plot is drawn.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edge_foct.edge_app.evaluation.metrics import roc_curve
from edge_foct.runtime import atomic

#: (key, column title, scale, decimals) of the accuracy table; AUROC-like values in percent
ACCURACY_COLUMNS = (
    ("image_auroc", "img AUROC", 100, 1), ("pixel_auroc", "px AUROC", 100, 1),
    ("image_f1_max", "img F1max", 100, 1), ("pixel_f1_max", "px F1max", 100, 1),
    ("aupro", "AUPRO@0.3", 100, 1),
)


def summarise(per_split: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-split metric dicts -> {metric: {mean, std, per_split}}; std is the sample std (ddof 1)
    over splits (0 for one split). NaN values (a metric undefined on a split) are left out of
    mean and std but kept (as null) in ``per_split``."""
    keys = [k for k in per_split[0] if isinstance(per_split[0][k], (int, float))]
    out = {}
    for k in keys:
        vals = [float(r.get(k, math.nan)) for r in per_split]
        ok = [v for v in vals if not math.isnan(v)]
        out[k] = {"mean": float(np.mean(ok)) if ok else None,
                  "std": float(np.std(ok, ddof=1)) if len(ok) > 1 else (0.0 if ok else None),
                  "per_split": [None if math.isnan(v) else v for v in vals]}
    return out


def write_results(path: str | Path, run: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    """``{"run": ..., "records": [...]}`` as JSON, atomically (safe to rewrite after each category)."""
    atomic.write_json(path, {"run": run, "records": records})
    return Path(path)


def _cell(metric: dict[str, Any] | None, scale: float, decimals: int) -> str:
    if not metric or metric.get("mean") is None:
        return "–"
    return f"{metric['mean'] * scale:.{decimals}f} ± {metric['std'] * scale:.{decimals}f}"


def _extras(m: dict[str, Any]) -> list[str]:
    rates = f"{_pct(m.get('false_alarm_rate'))} / {_pct(m.get('miss_rate'))}"
    oracle = (f"{_pct(m.get('oracle_false_alarm_rate'))} / {_pct(m.get('oracle_miss_rate'))}"
              f" (sum {_pts(m.get('error'))} vs {_pts(m.get('oracle_error'))})")
    stream = f"{_pct(m.get('stream_false_alarm_rate'))} / {_pct(m.get('stream_miss_rate'))}"
    ms = f"{m['seconds_per_image']['mean'] * 1e3:.1f}" if "seconds_per_image" in m else "–"
    conc = f"{m['concentration']['mean']:.3f}" if "concentration" in m else "–"
    adm = (f"{m['admitted_defective']['mean']:.1f} / {m['admitted_good']['mean']:.1f}"
           if "admitted_defective" in m else "–")
    return [rates, oracle, stream, ms, conc, adm, fg_split_cell(m)]


def fg_split_cell(m: dict[str, Any]) -> str:
    """Splits whose foreground judge kept FOCT's fg/bg split, of the splits run ("–": no foreground)."""
    used = m.get("foreground_split_used")
    if not used:
        return "–"
    runs = [v for v in used["per_split"] if v is not None]
    return f"{int(sum(runs))}/{len(runs)}"


def _pts(metric: dict[str, Any] | None) -> str:
    """A sum of two rates in percentage points."""
    return "–" if not metric or metric.get("mean") is None else f"{metric['mean'] * 100:.0f}"


def _pct(metric: dict[str, Any] | None) -> str:
    return "–" if not metric or metric.get("mean") is None else f"{metric['mean'] * 100:.0f}%"


def subset_line(run: dict[str, Any]) -> str:
    """The table's header line when `eval --max-test N` scored a subset of the test sets ("" otherwise):
    N, the seed and, per category, the good + defective images scored of the full test set's."""
    if not run.get("max_test"):
        return ""
    cats = "; ".join(f"{c} {v['scored'][0]} + {v['scored'][1]} of {v['of'][0]} + {v['of'][1]}"
                     for c, v in run["test_images"].items())
    return (f"Test sets: a seeded per-label subset (--max-test {run['max_test']}, seed {run['seed']}; "
            f"good + defective scored of all): {cats}.\n\n")


def accuracy_table(records: list[dict[str, Any]]) -> str:
    """Markdown: one row per category/shots/method, then the mean over categories per shots/method."""
    head = (["category", "shots", "method"] + [c[1] for c in ACCURACY_COLUMNS]
            + ["false alarms / misses @thr", "@oracle (sum @thr vs @oracle)", "@stream", "ms/img (method)", "concentration", "admitted def / good", "fg split (splits)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        m = r["metrics"]
        cells = [r["category"], str(r["shots"]), r["method"]]
        cells += [_cell(m.get(k), s, d) for k, _, s, d in ACCURACY_COLUMNS] + _extras(m)
        lines.append("| " + " | ".join(cells) + " |")
    cats = sorted({r["category"] for r in records})
    if len(cats) > 1:
        lines += ["", f"Mean over categories ({', '.join(cats)}; pixel metrics over those with masks):", "",
                  "| shots | method | " + " | ".join(c[1] for c in ACCURACY_COLUMNS)
                  + " | false alarms / misses @thr | false alarms + misses @thr | @oracle |",
                  "|" + "---|" * (5 + len(ACCURACY_COLUMNS))]
        order = list(dict.fromkeys(r["method"] for r in records))  # methods in the order they ran
        pairs = sorted({(r["shots"], r["method"]) for r in records}, key=lambda t: (t[0], order.index(t[1])))
        for shots, method in pairs:
            group = [r["metrics"] for r in records if r["shots"] == shots and r["method"] == method]
            cells = [str(shots), method]
            for k, _, s, d in ACCURACY_COLUMNS:
                vals = [g[k]["mean"] for g in group if k in g and g[k]["mean"] is not None]
                cells.append(f"{np.mean(vals) * s:.{d}f}" if vals else "–")
            mean = {k: [g[k]["mean"] for g in group if k in g and g[k]["mean"] is not None]
                    for k in ("false_alarm_rate", "miss_rate", "error", "oracle_error")}
            f = {k: (f"{np.mean(v) * 100:.0f}" if v else "–") for k, v in mean.items()}
            cells += [f"{f['false_alarm_rate']}% / {f['miss_rate']}%", f["error"], f["oracle_error"]]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_scores(path: str | Path, title: str, labels: np.ndarray, scores: dict[str, np.ndarray],
                thresholds: dict[str, float]) -> Path:
    """ROC curves of every method on one axis, then one histogram of raw image scores per method
    (good vs defective, the learnt threshold as a line). labels (N,) bool; scores {method: (N,)}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(scores)
    fig, axes = plt.subplots(1, n + 1, figsize=(4 * (n + 1), 3.6), squeeze=False)
    roc_ax = axes[0, 0]
    for name, s in scores.items():
        fpr, tpr = roc_curve(labels, s)
        roc_ax.plot(fpr, tpr, label=name)
    roc_ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls="--")
    roc_ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="image ROC")
    roc_ax.legend(fontsize=7)
    for ax, (name, s) in zip(axes[0, 1:], scores.items()):
        thr = thresholds[name]
        bins = np.linspace(min(s.min(), thr), max(s.max(), thr), 31)  # the threshold always in view
        ax.hist(s[~labels], bins=bins, alpha=0.6, label="good")
        ax.hist(s[labels], bins=bins, alpha=0.6, label="defective")
        ax.axvline(thr, color="k", lw=1, label="threshold")
        ax.set(title=name, xlabel="raw image score")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def latency_table(rows: list[dict[str, Any]], papers: dict[str, float]) -> str:
    """Markdown for `edge-foct bench`: engine, precision and thread plan (engine/BLAS/OpenCV threads)
    per row, per-stage median ms, total p95/p99, FLOPs, the papers' timings."""
    stages = ("preprocess", "backbone", "method", "map")
    head = (["method", "engine", "precision", "threads"] + [f"{s} ms" for s in stages]
            + ["total ms (median / p95 / p99)", "method GFLOP/img", "peak RSS MiB", "paper s/img (RTX 3090)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lat = r["latency_ms"]
        cells = [r["method"], r["engine"], r["precision"] or "–", r["threads_short"]]
        cells += [f"{lat[s]['median']:.1f}" for s in stages]
        cells.append(f"{lat['total']['median']:.1f} / {lat['total']['p95']:.1f} / {lat['total']['p99']:.1f}")
        cells.append("–" if r["method_flops"] is None else f"{r['method_flops'] / 1e9:.3g}")
        cells.append(f"{r['peak_rss_mib']:.0f}")
        paper = papers.get(r["method"].split("/")[0])
        cells.append("–" if paper is None else f"{paper:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    for name, sec in papers.items():
        if not any(r["method"].split("/")[0] == name for r in rows):
            lines.append("| " + " | ".join([f"{name} (paper only)"] + ["–"] * (len(head) - 2) + [f"{sec:.2f}"]) + " |")
    return "\n".join(lines) + "\n"
