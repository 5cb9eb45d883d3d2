"""Squared Euclidean distances on OpenVINO's CPU plugin: the methods' one GEMM, on the engine's threads.

    dist = OpenVinoDistances(threads=2, nearest_precision="bf16")  # compiled on first use per dim
    d = dist(q, m)                   # q (n, D), m (k, D) float32 -> (n, k) float32, always f32
    d_min, idx = dist.nearest(q, m)  # -> (n,) float32, (n,) int64: PatchCore's search, nearest_precision

Why: with the backbone on OpenVINO, the method step's GEMM on NumPy's BLAS either runs on one
thread (the thread plan keeps BLAS at 1 so that OpenBLAS's spinning workers do not steal the cores
from the next frame's backbone: with BLAS at 2 threads the WRN-50-2 backbone went 17 -> 28 ms) or
fights the engine. Here the same GEMM runs in OpenVINO's own thread pool, which the backbone already
uses and which idles between calls. WRN-50-2 features at 256 px, q (1024, 1024) against m (205, 1024),
2 threads, idle box: the (n, k) matrix 2.8 ms and the nearest row alone (min and arg-min inside the
graph, no (n, k) output) 2.1 ms in f32, against NumPy's 3.8-4.6 ms (benchmarks/README.md "CPU engines").

Precision, two cases:
- the matrix (the transport cost of ct / oct / foct's paper preset; their edge step runs whole in
  runtime/engines/openvino_transport.py) is always f32: it goes through softmaxes of -C / tau,
  which amplify absolute errors by 1 / tau; it equals NumPy's to float rounding (<= 1e-5 of the
  largest term, the same nearest row), so tau, the scores and the online memory's choices are the
  reference's (tests/runtime/engines/test_openvino_distance.py).
- the nearest row (PatchCore's score: the distance itself) runs in ``nearest_precision``, which the
  start-up decision sets to the backbone engine's (bf16 where the CPU has it, as anomalib's OpenVINO
  PatchCore runs its kNN). In bf16, |q|^2 + |m|^2 - 2 q.m cancels with an error relative to the
  norms, not to the distance: on a random CNN's post-ReLU features (|q|^2 ~ 120, distances ~ 13) the
  uncentred search was 5 % off and ranked a defect below a good part. So both sides are centred on
  the memory's mean inside the graph first (the Subtract runs in f32, before the MatMul's bf16 inputs
  are rounded; distances are unchanged): the error is then relative to the features' spread, 1e-4
  (median) on features with a large common offset, the nearest row the same for ~99 % of the patches.

Two graphs (the matrix; the nearest row), dynamic n and k (the episodic memory grows online), each
compiled per feature dimension D the first time it is seen; one infer request each, behind a lock
(the app scores from one thread; the lock makes a second caller wait rather than corrupt buffers).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

import numpy as np

from .openvino_engine import _release, import_openvino, shared_core


def _ops():
    try:
        import openvino.opset13 as ops
    except ImportError:  # OpenVINO before 2024.4 kept the opsets under openvino.runtime
        import openvino.runtime.opset13 as ops
    return ops


def _graph(ov, d: int, nearest: bool):
    """q (n, d), m (k, d) -> max(|q|^2 + |m|^2 - 2 q m^T, 0) (n, k) as an ov.Model; ``nearest``: its
    row minimum (n,) and arg-minimum (n,) int64 instead (|q|^2 is added after the minimum), computed
    on q and m centred on m's mean (see the module docstring: bf16 cancellation)."""
    ops = _ops()
    q = ops.parameter([-1, d], np.float32, name="queries")
    m = ops.parameter([-1, d], np.float32, name="memory")
    params = [q, m]
    axis1 = ops.constant(np.array([1], np.int64))
    if nearest:
        centre = ops.reduce_mean(m, ops.constant(np.array([0], np.int64)), True)  # (1, d)
        q, m = ops.subtract(q, centre), ops.subtract(m, centre)
    qn = ops.reduce_sum(ops.multiply(q, q), axis1, True)  # (n, 1)
    mn = ops.unsqueeze(ops.reduce_sum(ops.multiply(m, m), axis1, False), ops.constant(np.array([0], np.int64)))
    partial = ops.add(mn, ops.multiply(ops.matmul(q, m, False, True), ops.constant(np.float32(-2.0))))  # (n, k)
    zero = ops.constant(np.float32(0.0))
    if not nearest:
        return ov.Model([ops.maximum(ops.add(qn, partial), zero).output(0)], params, f"sq_dists_d{d}")
    top = ops.topk(ops.negative(partial), ops.constant(np.int64(1)), 1, "max", "none", "i64")  # (n, 1) each
    dist = ops.maximum(ops.subtract(qn, top.output(0)), zero)
    return ov.Model([dist.output(0), top.output(1)], params, f"nearest_d{d}")


class RequestCache:
    """One compiled model and infer request per key, compiled on OpenVINO's CPU plugin the first time
    the key is asked for (``threads`` inference threads, latency hint, one stream); released with the
    cache. What the methods' small graphs here and in openvino_transport.py share."""

    def __init__(self, threads: int | None) -> None:
        self.threads = threads
        self._handles: dict = {}
        weakref.finalize(self, _release_all, self._handles)

    def get(self, key, model: Callable[[], Any], precision: str):
        """The infer request for ``key``; ``model()`` builds its ov.Model when it is not compiled yet."""
        handles = self._handles.get(key)
        if handles is None:
            config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": precision}
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = int(self.threads)
            compiled = shared_core().compile_model(model(), "CPU", config)
            handles = self._handles[key] = {"request": compiled.create_infer_request(), "compiled": compiled}
        return handles["request"]


def _release_all(handles: dict) -> None:
    for h in handles.values():
        _release(h)
    handles.clear()


class OpenVinoDistances:
    """Callable ``(q (n, D), m (k, D)[, m_norms]) -> (n, k)`` squared distances, clamped at 0.

    threads: OpenVINO inference threads (the backbone engine's count, so both share one pool's
    size). ``m_norms`` is accepted for the NumPy signature (runtime/knn.py ``sq_dists``) and not
    used: the graph computes the norms itself (k x D multiply-adds, <1 % of the GEMM).
    """

    def __init__(self, threads: int | None = None, nearest_precision: str = "f32") -> None:
        self._ov_mod = import_openvino()
        if nearest_precision not in ("f32", "bf16"):
            raise ValueError(f"nearest_precision {nearest_precision!r}: 'f32' or 'bf16'")
        self.threads, self.nearest_precision = threads, nearest_precision
        self._requests = RequestCache(threads)
        self._lock = threading.Lock()
        self.description = (f"openvino {self._ov_mod.__version__.split('-')[0]} [CPU, matrix f32, nearest "
                            f"{nearest_precision}, {threads or 'default'} threads]")

    def _request(self, d: int, nearest: bool):
        return self._requests.get((d, nearest), lambda: _graph(self._ov_mod, d, nearest),
                                  self.nearest_precision if nearest else "f32")

    @staticmethod
    def _inputs(q: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if q.ndim != 2 or m.ndim != 2 or q.shape[1] != m.shape[1]:
            raise ValueError(f"distances: queries {q.shape} and memory {m.shape} must be (n, D) and (k, D)")
        return np.ascontiguousarray(q, np.float32), np.ascontiguousarray(m, np.float32)

    def __call__(self, q: np.ndarray, m: np.ndarray, m_norms: np.ndarray | None = None) -> np.ndarray:
        q, m = self._inputs(q, m)
        if q.shape[0] == 0 or m.shape[0] == 0:
            return np.zeros((q.shape[0], m.shape[0]), np.float32)
        with self._lock:  # inputs shared, not copied: they outlive the synchronous infer
            out = self._request(q.shape[1], False).infer({0: q, 1: m}, share_inputs=True)[0]
            return np.array(out, copy=True)  # the request overwrites its output on the next call

    def nearest(self, q: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """q (n, D), m (k, D), k >= 1 -> squared distance to the nearest memory row (n,) float32 and
        that row's index (n,) int64: ``knn.nearest_sq_dist``'s result without the (n, k) matrix."""
        q, m = self._inputs(q, m)
        if m.shape[0] == 0:
            raise ValueError("nearest: the memory has no rows")
        if q.shape[0] == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        with self._lock:
            out = self._request(q.shape[1], True).infer({0: q, 1: m}, share_inputs=True)
            return np.array(out[0], np.float32).reshape(-1), np.array(out[1], np.int64).reshape(-1)
