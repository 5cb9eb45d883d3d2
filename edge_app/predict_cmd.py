"""``edge-foct predict``: score images with a bank; JSON lines, 16-bit maps and overlays."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from tqdm import tqdm

from edge_foct.runtime import atomic
from edge_foct.runtime.errors import EdgeFoctError, ImageError
from edge_foct.runtime.image_io import list_images, read_image

from .inspect_session import Session, open_session
from .out_dir import clear_predict_outputs, ensure_writable
from .json_out import dumps
from .options import FINITE
from .run_options import engine_option, start_threads, threads_option
from .render import encode_png, map_png16, overlay_bgr

log = logging.getLogger("edge_foct.predict")


def output_stem(path: Path, taken: set[str]) -> str:
    """'<parent>_<stem>', unique within one run (MVTec test folders reuse file names)."""
    stem = f"{path.parent.name}_{path.stem}"
    name, k = stem, 1
    while name in taken:
        k += 1
        name = f"{stem}-{k}"
    taken.add(name)
    return name


def predict_images(session: Session, paths: list[Path], out: Path, progress: bool = True) -> list[dict]:
    """Inspect each image in order; write maps/, overlays/ and results.jsonl under ``out``.

    A bad image gets a record with "error" and does not stop the run. results.jsonl is written
    atomically at the end, so an interrupted run never leaves a truncated file. Maps, overlays and
    results.jsonl of an earlier run in ``out`` are removed first.
    """
    ensure_writable(out)
    clear_predict_outputs(out)  # maps of an earlier run would sit beside this run's, unlisted
    records, taken = [], set()
    for p in tqdm(paths, desc="predict", unit="img", disable=not progress, file=sys.stderr):
        try:
            rgb = read_image(p)
        except ImageError as e:
            log.error("%s", e)
            records.append({"path": str(p), "error": str(e)})
            continue
        r = session.inspector.inspect(rgb)
        stem = output_stem(p, taken)
        atomic.write_bytes(out / "maps" / f"{stem}.png", encode_png(map_png16(r.anomaly_map, r.threshold)))
        atomic.write_bytes(out / "overlays" / f"{stem}.png",
                           encode_png(overlay_bgr(r.crop, r.anomaly_map, r.threshold, r.score, r.defective,
                                                  session.warning)))
        rec = {"path": str(p), "image_score": round(r.score, 6), "defective": bool(r.defective),
               "threshold": r.threshold, "map": f"maps/{stem}.png", "overlay": f"overlays/{stem}.png",
               "timings_ms": r.timings_ms, "diagnostics": r.diagnostics}
        if session.warning:
            rec["warning"] = session.warning
        records.append(rec)
    atomic.write_bytes(out / "results.jsonl", "".join(dumps(r) + "\n" for r in records).encode())
    return records


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
