"""``edge-foct predict``: score images with a bank; JSON lines, 16-bit maps and overlays."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from edge_foct.edge_app.commands.run_options import engine_option, start_threads, threads_option
from edge_foct.edge_app.commands.value_types import FINITE
from edge_foct.edge_app.inspect_session import open_session
from edge_foct.edge_app.predicting import predict_images
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.image_io import list_images

log = logging.getLogger("edge_foct.predict")


@click.command("predict")
@click.option("--bank", "bank_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Bank folder from `edge-foct fit` (manifest.json + bank.npz).")
@click.argument("images", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Results folder: results.jsonl, maps/ (16-bit anomaly maps), overlays/; an earlier run's "
                   "files there are replaced.")
@click.option("--backbone", default=None, help="Use this file for the bank's backbone (same sha256).")
@click.option("--threshold", type=FINITE, default=None, help="Override the bank's threshold (a finite number).")
@click.option("--offline/--online", "offline", default=False,
              help="Online methods: do not learn from these images (default: learn, in order).")
@click.option("--engines", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="TensorRT engines from `edge-foct build-engines`: used when built here from this backbone.")
@click.option("--compute", type=click.Choice(["auto", "numpy", "cuda"]), default="auto", show_default=True,
              help="Transport maths: CUDA kernels (auto: when a GPU is usable) or the NumPy reference.")
@engine_option
@threads_option
def command(bank_dir, images, out, backbone, threshold, offline, engines, compute, engine, threads) -> None:
    """Score IMAGES (files or folders) with a fitted bank."""
    plan = start_threads(threads)
    paths = list_images(list(images))
    if not paths:
        raise EdgeFoctError(f"no images found in {', '.join(images)}")
    session = open_session(bank_dir, backbone, threshold, online=not offline, engine_dir=engines, compute=compute,
                           engine=engine, plan=plan)
    records = predict_images(session, paths, out)
    bad = sum("error" in r for r in records)
    flagged = sum(bool(r.get("defective")) for r in records)
    click.echo(f"{len(records) - bad} images scored, {flagged} defective, {bad} unreadable -> {out}/results.jsonl")
    thr_warning = session.bank.manifest["threshold"].get("warning")
    if thr_warning and threshold is None:
        click.echo(f"WARNING: {thr_warning}", err=True)
    if bad:
        sys.exit(1)
