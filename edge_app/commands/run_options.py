"""The two start-up options every command that runs a backbone shares: ``--engine`` and ``--threads``.

``start_threads`` turns ``--threads`` into the process's thread plan (runtime/threads.py), applies it
once and logs it in one line; the plan then goes to the engine that is opened (``open_engine``).
"""

from __future__ import annotations

import click

from edge_foct.runtime.engines.choose import CHOICES
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.threads import ThreadPlan, apply_plan, plan_threads

ENGINE_HELP = (f"Backbone engine: {' | '.join(CHOICES)} (cpu = ONNX Runtime on the CPU; openvino:f32 / "
               "openvino:bf16 fix OpenVINO's precision). auto: TensorRT engines > ONNX Runtime CUDA > "
               "OpenVINO (x86, when installed) > ONNX Runtime CPU; `edge-foct doctor` says which and why.")

engine_option = click.option("--engine", default="auto", show_default=True, help=ENGINE_HELP)
threads_option = click.option("--threads", type=int, default=None,
                              help="Cores for the backbone engine and BLAS (default: every usable core; "
                                   "the plan is logged at start-up).")


segmenter_option = click.option(
    "--segmenter", type=click.Path(file_okay=False), default=None, metavar="DIR",
    help="Folder of SAM's two ONNX graphs (`edge-foct export --what segmenter --sam-checkpoint FILE`): the "
         "foreground masks of foct's fg/bg memory. Default: the classical contrast estimator.")


def open_segmenter(segmenter: str | None):
    """``--segmenter DIR`` -> SAM's foreground estimator, or None (the default estimator)."""
    if segmenter is None:
        return None
    from edge_foct.runtime.foreground import make_foreground

    return make_foreground(segmenter)


def start_threads(threads: int | None) -> ThreadPlan:
    """The thread plan for ``--threads`` (None: every usable core), applied to this process."""
    if threads is not None and threads < 1:
        raise EdgeFoctError(f"--threads {threads}: give a number of cores >= 1 (or leave it out)")
    plan = plan_threads(threads)
    apply_plan(plan)
    return plan
