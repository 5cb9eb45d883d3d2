"""Squared Euclidean distances on OpenVINO's CPU plugin: the methods' one GEMM, on the engine's threads.

    dist = OpenVinoDistances(threads=2)        # f32; compiled on first use for each feature dim
    d = dist(q, m)                             # q (n, D), m (k, D) float32 -> (n, k) float32

Why: with the backbone on OpenVINO, the method step's GEMM on NumPy's BLAS either runs on one
thread (the thread plan keeps BLAS at 1 so that OpenBLAS's spinning workers do not steal the cores
from the next frame's backbone: with BLAS at 2 threads the WRN-50-2 backbone went 17 -> 28 ms) or
fights the engine. Here the same GEMM runs in OpenVINO's own thread pool, which the backbone already
uses and which idles between calls: WRN-50-2 features at 256 px, q (1024, 1024) against m (205, 1024),
2 threads, 2.8 ms against NumPy's 4.6 ms (benchmarks/README.md "CPU engines").

Precision: always f32 (``INFERENCE_PRECISION_HINT f32``), whatever the backbone runs in: the
distances equal NumPy's to float rounding (|err| <= 1e-6 of the largest distance, the same nearest
row; tests/runtime/engines/test_openvino_distance.py), so the methods' transport maths, tau and the
episodic memory's choices are those of the reference. bf16 here was 1.6x faster again but moved
the nearest row on ~1 % of the patches.

One graph, dynamic n and k (the episodic memory grows online), compiled per feature dimension D
the first time it is seen; one infer request behind a lock (the app scores from one thread; the
lock makes a second caller wait rather than corrupt the request's buffers).
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from .openvino_engine import _release, import_openvino, shared_core


def _graph(ov, d: int):
    """q (n, d), m (k, d) -> max(|q|^2 + |m|^2 - 2 q m^T, 0) (n, k), as an ov.Model."""
    try:
        import openvino.opset13 as ops
    except ImportError:  # OpenVINO before 2024.4 kept the opsets under openvino.runtime
        import openvino.runtime.opset13 as ops
    q = ops.parameter([-1, d], np.float32, name="queries")
    m = ops.parameter([-1, d], np.float32, name="memory")
    axis1 = ops.constant(np.array([1], np.int64))
    qn = ops.reduce_sum(ops.multiply(q, q), axis1, True)  # (n, 1)
    mn = ops.unsqueeze(ops.reduce_sum(ops.multiply(m, m), axis1, False), ops.constant(np.array([0], np.int64)))
    cross = ops.matmul(q, m, False, True)  # (n, k)
    out = ops.maximum(ops.add(ops.add(qn, mn), ops.multiply(cross, ops.constant(np.float32(-2.0)))),
                      ops.constant(np.float32(0.0)))
    return ov.Model([out], [q, m], f"sq_dists_d{d}")


class OpenVinoDistances:
    """Callable ``(q (n, D), m (k, D)[, m_norms]) -> (n, k)`` squared distances, clamped at 0.

    threads: OpenVINO inference threads (the backbone engine's count, so both share one pool's
    size). ``m_norms`` is accepted for the NumPy signature (runtime/knn.py ``sq_dists``) and not
    used: the graph computes the norms itself (k x D multiply-adds, <1 % of the GEMM).
    """

    precision = "f32"

    def __init__(self, threads: int | None = None) -> None:
        self._ov_mod = import_openvino()
        self.threads = threads
        self._requests: dict[int, dict] = {}
        self._lock = threading.Lock()
        self.description = f"openvino {self._ov_mod.__version__.split('-')[0]} [CPU, f32, " \
                           f"{threads or 'default'} threads]"

    def _request(self, d: int):
        handles = self._requests.get(d)
        if handles is None:
            config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = int(self.threads)
            compiled = shared_core().compile_model(_graph(self._ov_mod, d), "CPU", config)
            handles = {"request": compiled.create_infer_request(), "compiled": compiled}
            weakref.finalize(self, _release, handles)
            self._requests[d] = handles
        return handles["request"]

    def __call__(self, q: np.ndarray, m: np.ndarray, m_norms: np.ndarray | None = None) -> np.ndarray:
        if q.ndim != 2 or m.ndim != 2 or q.shape[1] != m.shape[1]:
            raise ValueError(f"distances: queries {q.shape} and memory {m.shape} must be (n, D) and (k, D)")
        if q.shape[0] == 0 or m.shape[0] == 0:
            return np.zeros((q.shape[0], m.shape[0]), np.float32)
        q = np.ascontiguousarray(q, np.float32)
        m = np.ascontiguousarray(m, np.float32)
        with self._lock:
            out = self._request(q.shape[1]).infer({0: q, 1: m}, share_inputs=True)[0]
            return np.array(out, copy=True)  # the request overwrites its output on the next call
