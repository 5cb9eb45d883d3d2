"""``edge-foct bench``: per-stage latency of the served path (runtime/pipeline.py's Inspector).

Rows: every engine (``--engine``, or several with ``--compare``) x thread plan (``--threads``, one
or several) x method. Each row fits its own bank on ``--shots`` support images (``--data``'s
train/good, or the built-in demo part, so it runs on a fresh machine) with its own backbone; then
``--warmup`` + ``--frames`` frames (the category's test images, decoded beforehand and cycled, like
frames already in memory) go through ``Inspector.inspect`` online, interleaved: frame i through
every row before frame i+1, so that a load change on a shared machine hits every row alike. Each
row reports the median / p95 / p99 of every stage after warm-up, its engine, precision and thread
plan, the process's peak RSS, the method's FLOPs per image (``Method.flops``), the machine, and the
papers' per-image timings beside them.
"""

from __future__ import annotations

from pathlib import Path

import click

from edge_foct.edge_app.commands.options import MultiValueCommand
from edge_foct.edge_app.commands.run_options import ENGINE_HELP
from edge_foct.edge_app.evaluation.latency import run_bench
from edge_foct.runtime.errors import EdgeFoctError


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
@click.option("--shots", type=click.IntRange(min=0), default=2, show_default=True,
              help="Support images of the benchmarked bank (0: zero-shot methods).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the support draw.")
@click.option("--threads", multiple=True, default=("default",), show_default=True,
              help="Thread plan(s): N cores, 'default' (every usable core) or 'library' (no plan: each "
                   "library's own threads); several values are run interleaved.")
@click.option("--engine", default="auto", show_default=True, help=ENGINE_HELP)
@click.option("--compare", multiple=True, default=(),
              help="Engines to run interleaved in one run instead of --engine, e.g. `cpu openvino openvino:f32`.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for bench.json and bench.md (default: print only).")
def command(backbone, size, methods, frames, warmup, data, shots, seed, threads, engine, compare, out) -> None:
    """Per-stage latency (median/p95/p99), peak memory and FLOPs per engine, thread plan and method."""
    if frames < 1 or warmup < 0:
        raise EdgeFoctError("--frames must be >= 1 and --warmup >= 0")
    engines = [e for v in compare for e in v.replace(",", " ").split()] or [engine]
    run_bench(backbone, size, list(methods), frames, warmup, data, shots, seed, list(threads), out, engines)
