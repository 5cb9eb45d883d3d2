"""``edge-foct bench``: per-stage latency of the served path (runtime/pipeline.py's Inspector).

For each method: fit a bank on ``--shots`` support images (``--data``'s train/good, or the
built-in demo part, so it runs on a fresh machine), then push ``--warmup`` + ``--frames`` frames
(the category's test images, decoded beforehand and cycled, like frames already in memory)
through ``Inspector.inspect`` online, and report the median / p95 / p99 of every stage after
warm-up, the process's peak RSS, the method's FLOPs per image (``Method.flops``), the machine,
and the papers' per-image timings beside them.
"""

from __future__ import annotations

import datetime as dt
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from edge_foct.runtime import atomic
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.config import Config
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.fit import fit_bank
from edge_foct.runtime.image_io import list_images, read_image
from edge_foct.runtime.methods import Method, make_params, method_class
from edge_foct.runtime.pipeline import Inspector
from edge_foct.runtime.preprocess import Preprocessor

from .backbones import UNTRAINED_WARNING, resolve_backbone
from .demo_data import write_demo_dataset
from .eval_cmd import MultiValueCommand, load_foreground, parse_methods
from .machine_info import describe, kernel_path, machine_info
from .report import latency_table

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


def bench_method(bb: Backbone, pre: Preprocessor, label: str, support: list[np.ndarray],
                 frames: list[np.ndarray], n: int, warmup: int, foreground: Any) -> dict[str, Any]:
    name, preset = label.split("/", 1) if "/" in label else (label, None)
    config = Config().replace(input={"resize": pre.resize, "crop": pre.crop}, method={"name": name, "preset": preset})
    bank = fit_bank(bb, support, config, foreground=foreground if method_class(name).uses_foreground else None)
    method = bank.make_method()
    insp = Inspector(bb, pre, method, bank.threshold, online=True)
    times = {s: [] for s in STAGES}
    last: dict[str, Any] = {}
    for i in tqdm(range(warmup + n), desc=f"bench {label}", unit="frame", file=sys.stderr):
        r = insp.inspect(frames[i % len(frames)])
        if i >= warmup:
            for s in STAGES:
                times[s].append(r.timings_ms[s])
        last = r.diagnostics
    q, d = pre.grid[0] * pre.grid[1], bb.info.feature_dim
    m, m_source = memory_rows(method, d, last)
    flops = method_class(name).flops(m, q, d, make_params(name, None, preset))
    lat = {s: {"median": float(np.median(v)), "p95": float(np.percentile(v, 95)),
               "p99": float(np.percentile(v, 99)), "mean": float(np.mean(v))} for s, v in times.items()}
    return {"method": label, "frames": n, "warmup": warmup, "latency_ms": lat, "memory_rows": m,
            "memory_rows_source": m_source, "patches": q, "feature_dim": d,
            "method_flops": None if flops is None else float(flops),
            "threshold": bank.threshold, "peak_rss_mib": peak_rss_mib()}


def run_bench(backbone: str | None, size: int | None, methods: list[str], frames: int, warmup: int,
              data: Path | None, shots: int, seed: int, threads: int | None, out: Path | None) -> dict[str, Any]:
    specs = parse_methods(methods)
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
    bb = Backbone.load(resolved.path, threads=threads)
    specs = parse_methods(methods, bb.side_arrays())
    pre = bb.preprocessor(size, size)
    needs_fg = any(method_class(s.name).uses_foreground for s in specs)
    foreground, fg_note = load_foreground() if needs_fg else (None, "not used")
    rss0 = peak_rss_mib()
    rows = [bench_method(bb, pre, s.label, support, images, frames, warmup, foreground) for s in specs]
    result = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "data": str(data) if data else "built-in demo part", "shots": shots, "seed": seed,
        "input": {"resize": pre.resize, "crop": pre.crop, "grid": list(pre.grid)},
        "backbone": {**bb.info.to_json(), "source": resolved.source, "engine": bb.engine.description,
                     "kernels": kernel_path(resolved.path)},
        "foreground": fg_note, "peak_rss_before_methods_mib": rss0, "papers_rtx3090_s": PAPERS_RTX3090,
        "machine": machine_info(), "results": rows,
        "warnings": [] if bb.info.pretrained else [UNTRAINED_WARNING],
    }
    table = latency_table(rows, PAPERS_RTX3090)
    md = (f"{describe(result['machine'])}\n\nbackbone {bb.info.backbone_id} ({bb.engine.description}), "
          f"input {pre.crop}x{pre.crop}, {shots}-shot bank, {frames} frames after {warmup} warm-up\n\n{table}")
    if out is not None:
        atomic.write_json(out / "bench.json", result)
        atomic.write_bytes(out / "bench.md", md.encode())
    click.echo(md)
    if not bb.info.pretrained:
        click.echo(f"WARNING: {UNTRAINED_WARNING}", err=True)
    return result


@click.command("bench", cls=MultiValueCommand)
@click.option("--backbone", default=None, help="Feature ONNX (or a known classification ONNX).")
@click.option("--size", type=int, default=None, help="Input size (resize = crop), e.g. 256 or 336 "
              "[default: the graph's fixed size (CLIP: 240), else 256].")
@click.option("--methods", multiple=True, default=("patchcore",), show_default=True,
              help="name or name/preset, space- or comma-separated; `all` = every method.")
@click.option("--frames", type=int, default=50, show_default=True, help="Timed frames per method.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed frames first.")
@click.option("--data", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="MVTec-layout category (support from train/good, frames from test/). Default: the demo part.")
@click.option("--shots", type=click.IntRange(min=1), default=2, show_default=True,
              help="Support images of the benchmarked bank.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the support draw.")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: its own).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for bench.json and bench.md (default: print only).")
def command(backbone, size, methods, frames, warmup, data, shots, seed, threads, out) -> None:
    """Per-stage latency (median/p95/p99), peak memory and FLOPs per method, beside the papers' timings."""
    if frames < 1 or warmup < 0:
        raise EdgeFoctError("--frames must be >= 1 and --warmup >= 0")
    run_bench(backbone, size, list(methods), frames, warmup, data, shots, seed, threads, out)
