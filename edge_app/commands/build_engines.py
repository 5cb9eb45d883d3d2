"""``edge-foct build-engines``: the ONNX graphs of a folder -> TensorRT engines for THIS device.

Run it on the Jetson / RTX box itself: an engine only runs on the GPU model and TensorRT version
that built it (the runtime checks the manifest and refuses others). Without TensorRT it prints the
equivalent trtexec commands and one line saying why nothing was built.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from edge_foct.runtime.errors import EdgeFoctError


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise EdgeFoctError(f"{flag} {text!r}: give comma-separated integers, e.g. 256,336") from None


def rebuild_command(onnx_dir: Path, out: Path, fp16: bool, int8: bool, calib: tuple[Path, ...], sizes: str,
                    opt_size: int | None, max_batch: int, max_pairs: int) -> str:
    """The command line that reproduces this build (written into the engine manifest)."""
    args = ["edge-foct", "build-engines", "--onnx-dir", str(onnx_dir), "--out", str(out), "--sizes", sizes,
            "--max-batch", str(max_batch), "--max-pairs", str(max_pairs)]
    args += ["--opt-size", str(opt_size)] if opt_size else []
    args += ["--fp16"] if fp16 else []
    args += ["--int8", *[a for c in calib for a in ("--calib", str(c))]] if int8 else []
    return shlex.join(args)


@click.command("build-engines")
@click.option("--onnx-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Folder of ONNX graphs (from `edge-foct export` or `prepare-backbone`).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Engine folder [default: ONNX_DIR/tensorrt].")
@click.option("--fp16", is_flag=True, help="Allow FP16 kernels.")
@click.option("--int8", is_flag=True, help="INT8 for feature graphs, calibrated on --calib images.")
@click.option("--calib", type=click.Path(exists=True, path_type=Path), multiple=True,
              help="Calibration images or folders (good parts from the camera; 50-500 images).")
@click.option("--sizes", default="256,336", show_default=True, help="Backbone input sizes the engine accepts.")
@click.option("--opt-size", type=int, default=None, help="Size TensorRT tunes for [default: the largest].")
@click.option("--max-batch", type=click.IntRange(min=1), default=4, show_default=True,
              help="Largest batch the engines accept.")
@click.option("--max-pairs", type=int, default=65536, show_default=True, help="Navigator pairs per call.")
@click.option("--workspace-mib", type=click.IntRange(min=1), default=2048, show_default=True,
              help="TensorRT builder workspace (MiB).")
def command(onnx_dir, out, fp16, int8, calib, sizes, opt_size, max_batch, max_pairs, workspace_mib) -> None:
    """Build TensorRT engines (timing cache, optimisation profiles, FP16/INT8) and their manifest."""
    from edge_foct.export.tensorrt_build import (
        TIMING_CACHE,
        BuildOptions,
        build_engines,
        plan_engines,
    )

    out = out or onnx_dir / "tensorrt"
    opts = BuildOptions(fp16=fp16, int8=int8, calib=tuple(calib), sizes=_ints(sizes, "--sizes"),
                        opt_size=opt_size, max_batch=max_batch, max_pairs=max_pairs,
                        opt_pairs=min(16384, max_pairs), workspace_mib=workspace_mib)
    plans = plan_engines(onnx_dir, out, opts)
    click.echo("equivalent trtexec commands (for debugging):")
    for plan in plans:
        click.echo(f"  {plan.trtexec(out.resolve() / TIMING_CACHE)}")
    cmd = rebuild_command(onnx_dir, out, fp16, int8, tuple(calib), sizes, opt_size, max_batch, max_pairs)
    manifest = build_engines(onnx_dir, out, opts, cmd, plans)
    for key, entry in manifest["engines"].items():
        click.echo(f"{out / entry['engine']}: {key}, {entry['precision']}")
    click.echo(f"{out}: TensorRT {manifest['tensorrt_version']}, {manifest['gpu_name']} "
               f"(sm {manifest['compute_capability']}), {manifest['precision']}")
