"""``edge-foct doctor``: what this machine offers the GPU and CPU paths, and which path ``serve`` would take.

Probes only (runtime/cuda/probe.py, OpenVINO's device list): it never fails on a machine without a
GPU, a driver, TensorRT, OpenVINO or the ``gpu`` extra; each missing piece is printed with the reason,
and so is the thread plan (runtime/threads.py) the commands would start with. The "serve would take" line is
``decide_serving``, the very decision ``serve`` and ``predict`` make at start-up (inspect_session.py):
with ``--bank`` (and ``--engines``) it also checks that the folder holds an engine of that bank's backbone.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_foct.edge_app.doctor_report import collect, render


@click.command("doctor")
@click.option("--engines", "engine_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A folder from `edge-foct build-engines`: check its manifest against this machine.")
@click.option("--bank", "bank_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A bank folder: decide for its backbone exactly as `serve --bank` would.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--threads", type=int, default=None, help="Show the thread plan for this many cores.")
def command(engine_dir: Path | None, bank_dir: Path | None, as_json: bool, threads: int | None) -> None:
    """What this machine has (CUDA, TensorRT, ONNX Runtime, OpenVINO, numba-cuda) and which path serve takes."""
    info = collect(engine_dir, bank_dir, threads)
    click.echo(json.dumps(info, indent=1) if as_json else render(info))
