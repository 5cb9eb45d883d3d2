"""The thread plan: how many threads the backbone engine, BLAS (the method step) and OpenCV get.

Decided once at start-up (``plan_threads``), applied once (``apply_plan``) and logged in one line;
every command that runs a backbone takes it (``--threads N`` overrides the core count).

Why a plan: the per-frame stages run one after another (preprocess -> backbone -> method -> map),
never at the same time, so the pool that runs a stage must let go of the cores when it is done. By
default neither does: ONNX Runtime's intra-op pool spins after each run, and OpenBLAS (NumPy's BLAS)
keeps one thread per core spinning after each GEMM, so the backbone's and the method's threads
fight for the same cores (issue 20 measured edge-foct 1.8x slower with the defaults than with BLAS
pinned to one thread). The plan:

- engine: ``cores`` intra-op threads, 1 inter-op thread (the graph's nodes run in sequence), and
  ONNX Runtime's spin-wait off, so its threads sleep while the method step runs (OpenVINO's CPU
  plugin puts its threads to sleep by itself);
- BLAS: 1 thread. OpenBLAS's spin after a GEMM cannot be switched off once it is loaded (only by
  an environment variable read at load), and the method step is the small part of a frame
  (WRN-50-2 at 256 px: a 0.4-0.6 GFLOP method step against a ~20 GFLOP backbone); measured on a
  shared 2-core box, one BLAS thread ran the method step faster than two for patchcore and
  foct/edge on every engine (benchmarks/results/cpu_engines/);
- OpenCV: 1 thread -- its work per frame (resize, blur of one 256-336 px map) is shorter than
  waking a pool.

``cores`` is the number of CPUs this process may run on (``os.sched_getaffinity``), which is what a
container or ``taskset`` grants, not the host's count. ``library_defaults`` is no plan (each
library's own choice), kept so that ``edge-foct bench`` can measure what the plan buys.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """CPUs this process may run on (affinity mask; the host count where there is none)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPlan:
    """Threads per pool. engine_spin: whether the engine's pool busy-waits between runs."""

    cores: int
    engine: int
    engine_inter: int
    engine_spin: bool
    blas: int
    opencv: int
    source: str  # "default (N usable cores)" or "--threads N"

    def describe(self) -> str:
        spin = "spin" if self.engine_spin else "no spin"
        engine = self.engine or "library default"
        return (f"threads: engine {engine} intra / {self.engine_inter} inter ({spin}), BLAS {self.blas}, "
                f"OpenCV {self.opencv} [{self.source}]")

    def short(self) -> str:
        """For table cells: 'e2 b2 cv1' (engine, BLAS, OpenCV threads; 'lib': the library's own)."""
        spin = "+spin" if self.engine_spin else ""
        return f"e{self.engine or 'lib'}{spin} b{self.blas} cv{self.opencv}"

    def to_json(self) -> dict:
        return asdict(self)


def plan_threads(threads: int | None = None) -> ThreadPlan:
    """The plan for ``threads`` cores (None: every usable core). Raises ValueError for threads < 1."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    cores = usable_cores()
    n = threads or cores
    source = f"--threads {threads}" if threads else f"default: {cores} usable cores"
    return ThreadPlan(cores=cores, engine=n, engine_inter=1, engine_spin=False, blas=1, opencv=1, source=source)


def library_defaults() -> ThreadPlan:
    """No plan: ONNX Runtime's own intra-op count with spinning, BLAS and OpenCV at every core (what
    OpenBLAS and OpenCV start with when no environment variable says otherwise)."""
    cores = usable_cores()
    return ThreadPlan(cores=cores, engine=0, engine_inter=1, engine_spin=True, blas=cores, opencv=cores,
                      source="library defaults, no plan")


def set_limits(plan: ThreadPlan, controller=None) -> None:
    """BLAS and OpenCV threads of the whole process to the plan's (no log line; bench switches plans
    between rows with it). controller: a threadpoolctl.ThreadpoolController to reuse (its library
    scan costs milliseconds)."""
    import cv2
    from threadpoolctl import ThreadpoolController

    (controller or ThreadpoolController()).limit(limits=plan.blas, user_api="blas")
    cv2.setNumThreads(plan.opencv)


def apply_plan(plan: ThreadPlan) -> list[str]:
    """Set BLAS (every BLAS NumPy loaded, via threadpoolctl) and OpenCV to the plan, for the whole
    process, and log the plan in one line. The engine's threads are set where it is opened
    (runtime/engines/choose.py: ``open_engine``). -> the BLAS libraries limited, e.g.
    ["openblas 0.3.30 (SkylakeX)"]."""
    import numpy  # noqa: F401  (loads NumPy's BLAS, so that threadpoolctl finds it)
    from threadpoolctl import threadpool_info

    set_limits(plan)  # kept for the process (not a context)
    blas = [f"{i['internal_api']} {i['version']} ({i.get('architecture') or '?'}, {i['num_threads']} threads)"
            for i in threadpool_info() if i["user_api"] == "blas"]
    log.info("%s; BLAS libraries: %s", plan.describe(), ", ".join(blas) or "none found")
    return blas
