"""``edge-foct eval`` as a function: the few-shot protocol (evaluation/protocol.py) over categories,
methods, shots.

Per category: features once (FeatureStore), then for every shots x method x split a streamed run
(run_split) scored by split_metrics; per method/category/shots one JSON record with the mean,
std and per-split values of every metric (benchmarks/README.md documents the fields), a
Markdown table, and one plot per category and shots. Results are rewritten after each category,
so a long run leaves what it finished. A category's features are freed before the next.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from edge_foct.edge_app.backbones import UNTRAINED_WARNING, resolve_backbone
from edge_foct.edge_app.datasets.mvtec import Category, find_categories
from edge_foct.edge_app.evaluation.pool import Context, Task, TaskResult, run_tasks
from edge_foct.edge_app.evaluation.protocol import (FeatureStore, MethodSpec, draw_split, limit_test_set, pixel_truth,
                                                    test_set_counts)
from edge_foct.edge_app.evaluation.report import accuracy_table, plot_scores, subset_line, summarise, write_results
from edge_foct.edge_app.inspect_session import load_backbone
from edge_foct.edge_app.machine_info import kernel_path, machine_info
from edge_foct.runtime import atomic
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.compute_backend import Backend, distance_runtime, make_backend, with_engine_distances
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.fit import default_foreground
from edge_foct.runtime.foreground import make_foreground
from edge_foct.runtime.image_io import read_image
from edge_foct.runtime.methods import METHODS, make_params, method_class
from edge_foct.runtime.preprocess import Preprocessor, image_aspect
from edge_foct.runtime.support_augment import support_augment
from edge_foct.runtime.threads import ThreadPlan


def parse_methods(values: list[str], context: dict[str, Any] | None = None) -> list[MethodSpec]:
    """``name`` or ``name/preset``; ``all`` = every registered method with its defaults. Checked now.

    context: the backbone's side arrays (Backbone.side_arrays), when known: ``all`` then keeps the
    methods that run on this backbone, and a method named explicitly that cannot (WinCLIP on a CNN
    graph) is a one-line error before any work."""
    fits = lambda n: context is None or all(k in context for k in method_class(n).needs_context)  # noqa: E731
    names = [n for v in values for n in ([m for m in sorted(METHODS) if fits(m)] if v == "all" else [v])]
    specs = [MethodSpec(*n.split("/", 1)) if "/" in n else MethodSpec(n) for n in names]
    for s in specs:
        make_params(s.name, s.params, s.preset)  # unknown name or preset: one-line error now
        if not fits(s.name):
            raise EdgeFoctError(f"method {s.name!r} needs a CLIP graph with its side data (`edge-foct export "
                                f"--what clip`); this backbone has none")
    return specs


def load_foreground(segmenter: str | None = None) -> tuple[Any, str]:
    """The estimator a foreground method gets, and a note: SAM's graphs in ``segmenter`` when given
    (``--segmenter``, checked as ``fit`` checks it), else fit_bank's default (the classical estimator)."""
    if segmenter is not None:
        est = make_foreground(segmenter)
        return est, f"SAM engines in {segmenter} ({est.rule})"
    return default_foreground(), "runtime.foreground.make_foreground() (classical contrast estimator)"


def _record(cat: Category, spec: MethodSpec, shots: int, per_split: list[dict], supports: list[list[str]],
            notes: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    params = make_params(spec.name, spec.params, spec.preset)
    return {
        "method": spec.label, "category": cat.name, "shots": shots, "splits": len(per_split),
        "n_test": len(cat.test), "n_defective": sum(t.defective for t in cat.test),
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(params).items()},
        "augment": spec.augment, "metrics": summarise(per_split), "support": supports, "notes": notes, **extra,
    }


def category_aspect(cat: Category, n: int = 8) -> float:
    """Width / height of the category's train/good images (median of the first ``n``): the input
    aspect `fit --keep-aspect` would take from them."""
    return image_aspect([read_image(p) for p in cat.train[:n]])


def eval_category(cat: Category, specs: list[MethodSpec], shots: list[int], splits: int, seed: int,
                  bb: Backbone, pre: Preprocessor, views: int, pro_limit: float, out: Path,
                  foreground: Any, fg_note: str, batch: int, jobs: int = 1,
                  compute: Backend | None = None) -> list[dict[str, Any]]:
    """compute: what the methods' maths runs on (``run_eval`` decides it once, as serve does)."""
    with tqdm(total=len(cat.test), desc=f"{cat.name}: test features", unit="img", file=sys.stderr) as bar:
        store = FeatureStore(bb, pre, batch, progress=bar.update, compute=compute)
        store.ensure([t.path for t in cat.test])
    store.progress = None
    truth = pixel_truth(cat, pre)
    labels = np.array([t.defective for t in cat.test])
    notes = []
    if truth is None:
        notes.append("pixel metrics skipped: the category has no ground-truth masks")
    elif truth.skipped:
        notes.append(f"{truth.skipped} defective image(s) without a usable mask left out of the pixel metrics")
    tasks = [Task(k, spec, split, i) for k in shots for i, spec in enumerate(specs) for split in range(splits)]
    ctx = Context(cat, store, truth, labels, seed, views, pro_limit, foreground)
    done: dict[tuple[int, int, int], TaskResult] = {}  # (shots, index in specs, split) -> result
    with tqdm(total=len(tasks), desc=f"{cat.name}: runs ({jobs} jobs)", unit="run", file=sys.stderr) as bar:
        for r in run_tasks(ctx, tasks, jobs):
            done[(r.task.shots, r.task.index, r.task.split)] = r
            bar.set_postfix_str(f"done {r.task.shots}-shot {r.task.spec.label} split {r.task.split}")
            bar.update(1)
    records = []
    for k in shots:
        plot_scores_, plot_thr = {}, {}
        for i, spec in enumerate(specs):
            runs = [done[(k, i, split)] for split in range(splits)]
            rules = sum((Counter(r.foreground_rules) for r in runs), Counter())
            supports = [[p.name for p in draw_split(cat, k, split, seed)[0]] for split in range(splits)]
            plot_scores_[spec.label], plot_thr[spec.label] = runs[0].image_scores, runs[0].threshold
            extra = ({"foreground": {"source": fg_note, "rules": dict(rules)}}
                     if method_class(spec.name).uses_foreground else {})
            # which threshold rule set each split's threshold (and oct / foct's admission gate): a rule
            # change moves their AUROC, and the record says so
            extra["threshold_rules"] = dict(Counter(r.threshold_rule for r in runs))
            if pre.aspect != 1.0:
                extra["input"] = {"aspect": pre.aspect, "crop_hw": list(pre.crop_hw), "grid": list(pre.grid)}
            records.append(_record(cat, spec, k, [r.metrics for r in runs], supports, list(notes), extra))
        plot_scores(out / "plots" / f"{cat.name}-{k}shot.png", f"{cat.name}, {k}-shot, split 0 (raw scores)",
                    labels, plot_scores_, plot_thr)
    del store, ctx  # free this category's features before the next
    return records


def run_eval(data: Path | None, elpv: bool, categories: list[str], methods: list[str], shots: list[int],
             splits: int, seed: int, backbone: str | None, size: int | None, resize: int | None, views: int,
             out: Path, pro_limit: float = 0.3, batch: int = 8, jobs: int = 1,
             keep_aspect: bool = False, engine: str = "cpu", plan: ThreadPlan | None = None,
             augment: tuple[str, ...] = ("none",), max_test: int | None = None,
             segmenter: str | None = None) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    if (data is None) == (not elpv):
        raise EdgeFoctError("give exactly one data source: --data ROOT or --elpv")
    augments = list(dict.fromkeys(support_augment(a).spec for a in augment))  # a bad spec: one line before any work
    specs = parse_methods(methods)
    if elpv:
        from edge_foct.edge_app.datasets.elpv import elpv_root

        data = elpv_root()
    cats = find_categories(data, categories or None)
    subset = {c.name: [*test_set_counts(c)] for c in cats}  # full test sets: (good, defective)
    cats = [limit_test_set(c, max_test, seed) for c in cats]
    subset = {c.name: {"scored": [*test_set_counts(c)], "of": subset[c.name]} for c in cats}
    zero = [s.label for s in specs if not method_class(s.name).zero_shot]
    if 0 in shots and zero:
        raise EdgeFoctError(f"--shots 0 (text prompts only) needs zero-shot methods; {zero} need support images")
    for c in cats:
        if max(shots) > len(c.train):
            raise EdgeFoctError(f"--shots {max(shots)}: {c.name} has only {len(c.train)} train/good images")
    resolved = resolve_backbone(backbone)
    bb, choice = load_backbone(resolved.path, engine, plan)
    specs = [dataclasses.replace(s, augment=a) for s in parse_methods(methods, bb.side_arrays()) for a in augments]
    pre = bb.preprocessor(resize, size)
    foreground, fg_note = None, "not used"
    if any(method_class(s.name).uses_foreground for s in specs):
        foreground, fg_note = load_foreground(segmenter)
        click.echo(f"foreground masks: {fg_note}", err=True)
    run = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data": str(data), "categories": [c.name for c in cats], "methods": [s.label for s in specs],
        "shots": shots, "splits": splits, "seed": seed, "max_test": max_test, "test_images": subset, "views": views, "augment": augments, "aupro_limit": pro_limit, "jobs": jobs,
        "input": {"resize": pre.resize, "crop": pre.crop, "grid": list(pre.grid),
                  "aspect": "per category (keep-aspect)" if keep_aspect else 1.0},
        "backbone": {**bb.info.to_json(), "source": resolved.source, "engine": bb.engine.description,
                     "engine_choice": choice.describe(), "precision": choice.precision,
                     "kernels": kernel_path(resolved.path),
                     # where the methods' distance GEMM ran (forked --jobs workers: always NumPy)
                     "distances": distance_runtime("numpy", choice.backend) + (" (numpy in --jobs workers)"
                                                                               if jobs > 1 else "")},
        "threads": plan.to_json() if plan else None,
        "machine": machine_info(), "warnings": [] if bb.info.pretrained else [UNTRAINED_WARNING],
    }
    # the methods' distance GEMM where serve runs it beside this engine (OpenVINO: on its threads);
    # decided once: its compiled graphs serve every category
    compute = with_engine_distances(make_backend("numpy", "eval: the NumPy reference"), bb.engine)
    records: list[dict[str, Any]] = []
    for cat in cats:
        cat_pre = bb.preprocessor(resize, size, aspect=category_aspect(cat)) if keep_aspect else pre
        for a in augments:  # a quarter turn of a non-square input: one line
            support_augment(a, cat_pre.aspect)
        records += eval_category(cat, specs, shots, splits, seed, bb, cat_pre, views, pro_limit, out,
                                 foreground, fg_note, batch, jobs, compute)
        run["wall_seconds"] = round(time.perf_counter() - t0, 1)
        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        run["cpu_seconds"] = round(sum(u.ru_utime + u.ru_stime for u in usage), 1)  # this process + its workers
        run["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        write_results(out / "results.json", run, records)
        atomic.write_bytes(out / "results.md", (subset_line(run) + accuracy_table(records)).encode())
    click.echo(subset_line(run) + accuracy_table(records))
    click.echo(f"{len(records)} records in {out / 'results.json'}, table {out / 'results.md'}, plots "
               f"{out / 'plots'}; {run['wall_seconds']:.0f} s wall, {run['cpu_seconds']:.0f} s CPU")
    if not bb.info.pretrained:
        click.echo(f"WARNING: {UNTRAINED_WARNING}", err=True)
    return records
