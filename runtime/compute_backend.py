"""NumPy reference or CUDA kernels for the transport maths: decided once at start-up and logged.

    backend = select_backend("auto")      # logs e.g. "compute backend: cuda (numba-cuda 0.30.4, ...)"
    backend.soft_nn_scores(memory, queries, tau)

Both backends expose the same functions with the reference signatures (runtime/sinkhorn.py,
runtime/adamw.py, runtime/transport.py, runtime/ct_step.py). The choice is made here and nowhere else: no try/except
fallback on the per-frame path. ``auto`` takes CUDA only when numba-cuda sees a real GPU; the
simulator (NUMBA_ENABLE_CUDASIM=1) is used only when ``cuda`` is asked for explicitly (tests).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

from .cuda import probe
from .errors import EdgeFoctError, GpuError

log = logging.getLogger(__name__)
CHOICES = ("auto", "numpy", "cuda")


@dataclass(frozen=True)
class Backend:
    """name: "numpy" | "cuda"; description: the one line logged at start-up."""

    name: str
    description: str
    sinkhorn_log: Callable
    adamw_step: Callable
    soft_nn_scores: Callable
    ct_step: Callable  # (memory, queries, nav, rho) -> CTStep
    fit_navigator: Callable  # (cost, memory, queries, nav, steps, lr, weight_decay, rho) -> losses
    navigator_distances: Callable  # (nav, memory, queries) -> D (M, Q)
    sq_dists: Callable  # (q (n, D), m (k, D)) -> (n, k) squared distances: the methods' one GEMM
    nearest: Callable  # (q (n, D), m (k, D)) -> (n,) squared distance to the nearest row, (n,) its index
    soft_nn_transport: Callable  # (memory, queries, tau_ratio, rho, select_map) -> transport.SoftNNFit


def _numpy_backend(why: str) -> Backend:
    from . import adamw, ct_step, knn, sinkhorn, transport

    return Backend("numpy", f"numpy reference ({why})", sinkhorn.sinkhorn_log, adamw.adamw_step,
                   transport.soft_nn_scores, ct_step.ct_step, transport.fit_navigator, ct_step.navigator_distances,
                   knn.sq_dists, knn.nearest_sq_dist, transport.soft_nn_transport)


def _cuda_backend(detail: str) -> Backend:
    from . import knn, transport
    from .cuda import adamw, ct_step, sinkhorn, soft_nn

    return Backend("cuda", f"cuda kernels ({detail})", sinkhorn.sinkhorn_log, adamw.adamw_step,
                   soft_nn.soft_nn_scores, ct_step.ct_step, ct_step.fit_navigator, ct_step.navigator_distances,
                   knn.sq_dists, knn.nearest_sq_dist, transport.soft_nn_transport)


def decide(prefer: str = "auto") -> tuple[str, str]:
    """(backend name, reason) without importing any kernel: what ``select_backend`` would pick."""
    if prefer not in CHOICES:
        raise EdgeFoctError(f"compute backend {prefer!r} is not one of {list(CHOICES)}")
    if prefer == "numpy":
        return "numpy", "asked for"
    version, usable, reason = probe.numba_cuda()
    if usable:
        return "cuda", f"numba-cuda {version}, {reason}"
    if prefer == "cuda" and probe.numba_simulator():
        return "cuda", f"numba-cuda {version} SIMULATOR: correctness only, very slow"
    if prefer == "cuda":
        raise GpuError(f"compute backend 'cuda' asked for, but {reason}; use 'auto' or 'numpy' on this machine")
    return "numpy", reason


def make_backend(name: str, reason: str) -> Backend:
    """The backend ``decide`` named, with its reason (imports the kernels for "cuda"); logs nothing."""
    return _cuda_backend(reason) if name == "cuda" else _numpy_backend(reason)


def select_backend(prefer: str = "auto") -> Backend:
    """The backend for this process; logs the choice once. prefer: "auto" | "numpy" | "cuda"."""
    backend = make_backend(*decide(prefer))
    log.info("compute backend: %s", backend.description)
    return backend


def distance_runtime(compute: str, engine: str) -> str:
    """Where the methods' distance GEMM runs for a compute backend ("numpy" | "cuda") beside a backbone
    engine ("onnxruntime" | "openvino" | "tensorrt"): "openvino" for NumPy beside OpenVINO, else the
    compute backend's own name. The rule ``with_engine_distances`` applies and ``doctor`` reports."""
    return "openvino" if compute == "numpy" and engine == "openvino" else compute


def with_engine_distances(backend: Backend, engine) -> Backend:
    """``backend`` with the methods' distance GEMM moved onto the backbone engine's runtime where that
    helps (``distance_runtime``), else ``backend`` itself. Today one case: the NumPy backend beside an
    OpenVINO engine runs on OpenVINO's thread pool the distance matrix in f32 (NumPy's numbers to
    float rounding), PatchCore's nearest search in the engine's precision, centred first
    (runtime/engines/openvino_distance.py says why and what it gains), and ct / oct / foct's edge
    transport step whole, in f32 (runtime/engines/openvino_transport.py). Decided once, at start-up."""
    from .engines.openvino_engine import OpenVinoEngine

    kind = "openvino" if isinstance(engine, OpenVinoEngine) else "other"
    if distance_runtime(backend.name, kind) != "openvino":
        return backend
    from .engines.openvino_distance import OpenVinoDistances
    from .engines.openvino_transport import OpenVinoTransport

    dist = OpenVinoDistances(engine.threads, nearest_precision=engine.precision)
    return replace(backend, sq_dists=dist, nearest=dist.nearest, soft_nn_transport=OpenVinoTransport(engine.threads),
                   description=f"{backend.description}; distances on {dist.description}; edge transport too")
