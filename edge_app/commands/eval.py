"""``edge-foct eval``: options -> ``evaluation.runner.run_eval`` (the protocol is documented there)."""

from __future__ import annotations

from pathlib import Path

import click

from edge_foct.edge_app.commands.options import MultiValueCommand
from edge_foct.edge_app.commands.run_options import ENGINE_HELP, segmenter_option, start_threads, threads_option
from edge_foct.edge_app.evaluation.pool import default_jobs
from edge_foct.edge_app.evaluation.runner import run_eval
from edge_foct.runtime.errors import EdgeFoctError


@click.command("eval", cls=MultiValueCommand)
@click.option("--data", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="MVTec-layout root (MVTec AD, MPDD: category folders) or one category folder; or a "
                   "VisA root (split_csv/1cls.csv) or one of its object folders, read in place.")
@click.option("--elpv", is_flag=True, help="Use the ELPV solar-cell set (elpv-dataset package) instead of --data.")
@click.option("--categories", multiple=True, help="Category names (default: every one under --data).")
@click.option("--methods", multiple=True, default=("patchcore",), show_default=True,
              help="name or name/preset (e.g. foct/edge), space- or comma-separated; `all` = every method.")
@click.option("--shots", type=click.IntRange(min=0), multiple=True, default=(1, 2, 4), show_default=True,
              help="Support sizes K to evaluate (repeatable); fit cost grows faster than linearly with K.")
@click.option("--splits", type=int, default=5, show_default=True, help="Support draws per shots setting.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the support draws.")
@click.option("--backbone", default=None, help="Feature ONNX (or a known classification ONNX).")
@click.option("--size", type=int, default=None, help="Crop size (network input) [default: the graph's fixed "
              "size (CLIP: 240), else 256].")
@click.option("--resize", type=int, default=None, help="Resize before the centre crop (default: --size).")
@click.option("--max-test", type=click.IntRange(min=2), default=None, metavar="N",
              help="Score at most N test images per category: a seeded subset (--seed), N/2 good and N/2 "
                   "defective (a label with fewer: all of it, the other fills up), the same for every method, "
                   "shots and split; recorded in results.json and the table header [default: all].")
@click.option("--views", type=int, default=8, show_default=True, help="Jittered views per support image (threshold).")
@click.option("--augment", multiple=True, default=("none",), show_default=True, metavar="SPEC",
              help="Support augmentation(s) to compare (as `fit --augment`): none, rot90, rot180, flip or a + "
                   "join; several run every method once per spec (labelled method@spec) on the same features.")
@click.option("--jobs", type=int, default=0, show_default=True,
              help="Worker processes for the runs (0: one per available CPU; 1: no workers).")
@click.option("--keep-aspect", is_flag=True,
              help="Keep each category's image aspect (short side = --size) instead of a square crop.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Results folder (tables, per-image scores).")
@click.option("--engine", default="cpu", show_default=True,
              help=ENGINE_HELP + " eval defaults to cpu (ONNX Runtime, float32): accuracy must not depend on the "
                                 "machine, and OpenVINO's auto precision is bf16 where the CPU has it.")
@segmenter_option
@threads_option
def command(data, elpv, categories, methods, shots, splits, seed, backbone, size, resize, max_test, views, augment,
            jobs, keep_aspect, out, engine, segmenter, threads) -> None:
    """Few-shot accuracy over an MVTec-layout data set: image/pixel AUROC, F1-max, AUPRO@0.3."""
    if splits < 1 or any(k < 0 for k in shots):
        raise EdgeFoctError("--splits must be >= 1 and --shots >= 0 (0: zero-shot methods only)")
    if jobs < 0:
        raise EdgeFoctError(f"--jobs {jobs}: give 0 (one per CPU) or a positive number of worker processes")
    plan = start_threads(threads)
    run_eval(data, elpv, list(categories), list(methods), sorted(set(shots)), splits, seed,
             backbone, size, resize, views, out, jobs=jobs or default_jobs(), keep_aspect=keep_aspect,
             engine=engine, plan=plan, augment=tuple(dict.fromkeys(augment)), max_test=max_test,
             segmenter=segmenter)
