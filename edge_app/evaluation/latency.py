"""Per-stage latency and memory of methods on one machine (``edge-foct bench``): rows of engine x
thread plan x method, fitted once on the same support, timed interleaved frame by frame."""

from __future__ import annotations

import datetime as dt
import resource
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
from threadpoolctl import ThreadpoolController
from tqdm import tqdm

from edge_foct.edge_app.backbones import UNTRAINED_WARNING, resolve_backbone
from edge_foct.edge_app.datasets.demo_product import write_demo_dataset
from edge_foct.edge_app.evaluation.report import latency_table
from edge_foct.edge_app.evaluation.runner import load_foreground, parse_methods
from edge_foct.edge_app.inspect_session import open_backbone
from edge_foct.edge_app.machine_info import describe, kernel_path, machine_info
from edge_foct.runtime import atomic
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.compute_backend import Backend, decide, make_backend, with_engine_distances
from edge_foct.runtime.config import Config
from edge_foct.runtime.engines.choose import EngineChoice, choose_engine
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.fit import fit_bank
from edge_foct.runtime.image_io import list_images, read_image
from edge_foct.runtime.methods import Method, make_params, method_class
from edge_foct.runtime.pipeline import Inspector
from edge_foct.runtime.preprocess import Preprocessor
from edge_foct.runtime.threads import ThreadPlan, apply_plan, library_defaults, plan_threads, set_limits

#: per-image inference on an RTX 3090, seed 001 (FastRef) Table 3, in seconds
PAPERS_RTX3090 = {"patchcore": 0.21, "patchcore+": 0.49, "winclip": 0.50, "winclip+": 0.81}
STAGES = ("preprocess", "backbone", "method", "map", "total")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_rows(method: Method, d: int, diagnostics: dict[str, Any]) -> tuple[int, str]:
    """Memory rows the method scored against: its ``memory_size`` diagnostic when reported (the
    online memory grows), else the (rows, d) arrays of its bank and episodic state."""
    if "memory_size" in diagnostics:
        return int(diagnostics["memory_size"]), "diagnostics.memory_size"
    arrays = {**method.arrays(), **method.episodic_state()}
    return sum(int(a.shape[0]) for a in arrays.values() if a.ndim == 2 and a.shape[1] == d), "array rows"


@dataclass
class Row:
    """One (engine, thread plan, method) of the run, with its own backbone, bank and timings."""

    method: str
    engine: str  # the --compare entry, e.g. "cpu", "openvino:f32"
    choice: EngineChoice
    plan: ThreadPlan
    backbone: Backbone
    compute: Backend | None = None  # the method's maths, as serve decides it (open_rows)
    inspector: Inspector | None = None
    threshold: float = float("nan")
    times: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    last: dict[str, Any] = field(default_factory=dict)


def open_rows(graph: Path, engines: list[str], plans: list[ThreadPlan], labels: list[str]) -> list[Row]:
    """One backbone per (engine, plan) -- shared by that pair's methods -- and one row per method."""
    rows = []
    compute = make_backend(*decide("auto"))
    for engine in engines:
        choice = choose_engine(None, engine, graph=graph)
        for plan in plans:
            set_limits(plan)
            bb = open_backbone(graph, choice, plan)
            backend = with_engine_distances(compute, bb.engine)
            rows += [Row(label, engine, choice, plan, bb, backend) for label in labels]
    return rows


def fit_row(row: Row, pre: Preprocessor, support: list[np.ndarray], foreground: Any) -> None:
    """Fit the row's bank on its own backbone (each engine's features make its own bank)."""
    name, preset = row.method.split("/", 1) if "/" in row.method else (row.method, None)
    config = Config().replace(input={"resize": pre.resize, "crop": pre.crop}, method={"name": name, "preset": preset})
    uses_fg = method_class(name).uses_foreground
    bank = fit_bank(row.backbone, support, config, foreground=foreground if uses_fg else None)
    method = bank.make_method()
    if row.compute is not None:
        method.use_backend(row.compute)
    row.inspector = Inspector(row.backbone, pre, method, bank.threshold, online=True)
    row.threshold = bank.threshold


def row_result(row: Row, pre: Preprocessor, n: int, warmup: int) -> dict[str, Any]:
    name, preset = row.method.split("/", 1) if "/" in row.method else (row.method, None)
    method, bb = row.inspector.method, row.backbone
    q, d = pre.grid[0] * pre.grid[1], bb.info.feature_dim
    m, m_source = memory_rows(method, d, row.last)
    flops = method_class(name).flops(m, q, d, make_params(name, None, preset))
    lat = {s: {"median": float(np.median(v)), "p95": float(np.percentile(v, 95)),
               "p99": float(np.percentile(v, 99)), "mean": float(np.mean(v))} for s, v in row.times.items()}
    return {"method": row.method, "engine": row.choice.where(), "engine_description": bb.engine.description,
            "engine_choice": row.choice.describe(),
            "precision": row.choice.precision, "threads": row.plan.to_json(), "threads_short": row.plan.short(),
            "frames": n, "warmup": warmup, "latency_ms": lat, "memory_rows": m,
            "memory_rows_source": m_source, "patches": q, "feature_dim": d,
            "method_flops": None if flops is None else float(flops),
            "threshold": row.threshold, "peak_rss_mib": peak_rss_mib()}


def run_rows(rows: list[Row], frames: list[np.ndarray], n: int, warmup: int) -> None:
    """Frame i goes through every row before frame i+1 (interleaved: a load change on a shared
    machine hits every row alike); each row's thread plan is set before its frame."""
    controller = ThreadpoolController()
    for i in tqdm(range(warmup + n), desc=f"bench {len(rows)} rows, interleaved", unit="frame", file=sys.stderr):
        for row in rows:
            set_limits(row.plan, controller)
            r = row.inspector.inspect(frames[i % len(frames)])
            if i >= warmup:
                for s in STAGES:
                    row.times[s].append(r.timings_ms[s])
            row.last = r.diagnostics


def parse_threads(values: list[str]) -> list[ThreadPlan]:
    """--threads values: N (cores), "default" (every usable core) or "library" (no plan)."""
    plans = []
    for v in values:
        if v == "library":
            plans.append(library_defaults())
        elif v == "default":
            plans.append(plan_threads(None))
        elif v.isdigit() and int(v) >= 1:
            plans.append(plan_threads(int(v)))
        else:
            raise EdgeFoctError(f"--threads {v!r}: give a number of cores >= 1, 'default' or 'library'")
    return plans


def run_bench(backbone: str | None, size: int | None, methods: list[str], frames: int, warmup: int,
              data: Path | None, shots: int, seed: int, threads: list[str], out: Path | None,
              engines: list[str] = ("auto",)) -> dict[str, Any]:
    specs = parse_methods(methods)
    plans = parse_threads(list(threads))
    with tempfile.TemporaryDirectory(prefix="edge-foct-bench-") as tmp:
        cat = data if data is not None else write_demo_dataset(tmp)
        train = list_images(cat / "train" / "good") if (cat / "train" / "good").is_dir() else []
        test = [p for d in sorted((cat / "test").iterdir()) if d.is_dir() for p in list_images(d)] \
            if (cat / "test").is_dir() else []
        if len(train) < shots or not test or shots < 0:
            raise EdgeFoctError(f"{cat}: need >= {shots} images in train/good and some in test/*/ (MVTec layout)")
        rng = np.random.default_rng(seed)
        support = [read_image(train[i]) for i in sorted(rng.choice(len(train), shots, replace=False))]
        images = [read_image(p) for p in test[: max(1, min(len(test), frames + warmup))]]
    resolved = resolve_backbone(backbone)
    apply_plan(plans[0])  # logs the first plan; every row sets its own before it runs
    rss0 = peak_rss_mib()
    rows = open_rows(resolved.path, list(engines), plans, [s.label for s in specs])
    first = rows[0].backbone  # its side data and input size (every row reads the same graph)
    specs = parse_methods(methods, first.side_arrays())  # a method this graph cannot run: one line
    pre = first.preprocessor(size, size)
    needs_fg = any(method_class(s.name).uses_foreground for s in specs)
    foreground, fg_note = load_foreground() if needs_fg else (None, "not used")
    for row in rows:
        set_limits(row.plan)
        fit_row(row, pre, support, foreground)
    run_rows(rows, images, frames, warmup)
    results = [row_result(row, pre, frames, warmup) for row in rows]
    info = rows[0].backbone.info
    result = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "data": str(data) if data else "built-in demo part", "shots": shots, "seed": seed,
        "input": {"resize": pre.resize, "crop": pre.crop, "grid": list(pre.grid)},
        "backbone": {**info.to_json(), "source": resolved.source, "engine": rows[0].backbone.engine.description,
                     "kernels": kernel_path(resolved.path)},
        "engines": list(engines), "threads": [p.to_json() for p in plans], "interleaved": len(rows) > 1,
        "foreground": fg_note, "peak_rss_before_methods_mib": rss0, "papers_rtx3090_s": PAPERS_RTX3090,
        "machine": machine_info(), "results": results,
        "warnings": [] if info.pretrained else [UNTRAINED_WARNING],
    }
    table = latency_table(results, PAPERS_RTX3090)
    how = (f"{len(rows)} rows interleaved frame by frame in one process (peak RSS is the process's, all rows "
           f"loaded)" if len(rows) > 1 else "one row")
    md = (f"{describe(result['machine'])}\n\nbackbone {info.backbone_id}, input {pre.crop}x{pre.crop}, {shots}-shot bank, "
          f"{frames} frames after {warmup} warm-up, {how}\n\n{table}")
    if out is not None:
        atomic.write_json(out / "bench.json", result)
        atomic.write_bytes(out / "bench.md", md.encode())
    click.echo(md)
    if not info.pretrained:
        click.echo(f"WARNING: {UNTRAINED_WARNING}", err=True)
    return result
