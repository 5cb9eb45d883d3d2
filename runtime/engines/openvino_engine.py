"""OpenVINO engine on the CPU: reads the same feature ONNX as ONNX Runtime (no second export format).

OpenVINO is imported when an engine is opened, never at module import (the ``openvino`` extra is
optional). Buffers: the infer request owns its output tensors and overwrites them on the next
``run``; ``run`` copies them into arrays the caller owns, unless told ``copy=False`` (the
Inspector's per-frame path, which is done with the features before the next frame).

Precision: OpenVINO's CPU plugin runs the graph in the precision hint it is given. ``cpu_precision``
picks bf16 where the CPU has native bf16 (AVX-512 BF16 or AMX: OpenVINO lists "BF16" in the CPU's
optimisation capabilities) and f32 otherwise; bf16 keeps 8 bits of mantissa, so features move by
about 0.4 % (relative L2) against f32 -- see tests/runtime/engines/test_openvino_engine.py for the
tolerances and the accuracy parity table in benchmarks/results/engine_parity/ for what it does to
AUROC.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from pathlib import Path

import numpy as np

from .. import names
from ..errors import BackboneError
from .base import TensorSpec

log = logging.getLogger(__name__)

PRECISIONS = ("f32", "bf16")


def import_openvino():
    """The ``openvino`` module; BackboneError with the install command when it is absent."""
    try:
        import openvino
    except ImportError:
        raise BackboneError("OpenVINO is not installed: pip install 'edge-foct[openvino]' (or use --engine cpu, "
                            "ONNX Runtime)") from None
    return openvino


_CORE: list = []  # the process's one ov.Core (shared_core)
_CORE_LOCK = threading.Lock()


def shared_core():
    """The process's one ``ov.Core``, made on first use and kept for the life of the process.

    Every OpenVINO call here goes through it: a Core per engine (plus one per engine choice and
    per precision probe) put several Cores, each with its own CPU plugin state, in one process, and
    OpenVINO's Python API has crashed on repeated Core creation (openvinotoolkit/openvino#35338;
    ultralytics/ultralytics#25864, a segfault after ~20 model loads in one process, fixed by reusing
    one Core). One Core also outlives every compiled model, as in OpenVINO's C++ samples."""
    with _CORE_LOCK:
        if not _CORE:
            _CORE.append(import_openvino().Core())
        return _CORE[0]


def cpu_precision(core=None) -> tuple[str, str]:
    """(precision hint for this CPU, why): "bf16" when OpenVINO reports native BF16 on the CPU."""
    core = core or shared_core()
    caps = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if "BF16" in caps:
        return "bf16", "the CPU has native bf16 (OpenVINO capabilities: " + ", ".join(caps) + ")"
    return "f32", "the CPU has no native bf16 (OpenVINO capabilities: " + ", ".join(caps) + ")"


def _why_not(e: Exception) -> str:
    """OpenVINO's reason in one line: its "Conversion is failed for: ..." summary when there is one."""
    lines = [ln.strip(" -") for ln in str(e).splitlines() if ln.strip(" -")]
    summary = [ln for ln in lines if ln.startswith("Conversion is failed for")]
    return (summary or lines or [type(e).__name__])[0][:200]


def read_blocker(path: str | os.PathLike, core=None) -> tuple[str | None, dict[str, str]]:
    """(why OpenVINO's ONNX reader cannot convert the graph at ``path`` (e.g. operator-oriented int8:
    QLinearConv) or None when it can, the graph's metadata_props). Reads the graph once (start-up only)."""
    core = core or shared_core()
    try:
        model = core.read_model(str(path))
    except Exception as e:  # OpenVINO raises its own exception types
        return f"OpenVINO cannot read {Path(path).name}: {_why_not(e)}", {}
    return None, _metadata(model)


def _release(handles: dict) -> None:
    """Drop OpenVINO's infer request, then its compiled model."""
    handles.pop("request", None)
    handles.clear()


def _metadata(model) -> dict[str, str]:
    """The ONNX graph's metadata_props, which OpenVINO's ONNX reader keeps under rt_info "framework"."""
    info = model.get_rt_info()
    if "framework" not in info:
        return {}
    framework = info["framework"]
    return {str(k): framework[k].astype(str) for k in framework}


def _spec(port) -> TensorSpec:
    """The port under its graph I/O name (names.GRAPH_IO_NAMES): OpenVINO gives a tensor every name it
    had, e.g. {"agg/nhwc", "patch_features"}."""
    name = next((n for n in sorted(port.get_names()) if n in names.GRAPH_IO_NAMES), port.get_any_name())
    shape = tuple(d.get_length() if d.is_static else "dynamic" for d in port.get_partial_shape())
    return TensorSpec(name, np.dtype(port.get_element_type().to_dtype()).name, shape)


class OpenVinoEngine:
    """One ONNX graph compiled for OpenVINO's CPU plugin (latency hint: one stream).

    precision: "f32" | "bf16" | None (None: ``cpu_precision``). threads: inference threads
    (None: OpenVINO's choice, every core). Not thread-safe: one infer request; open one engine per
    thread.
    """

    def __init__(self, path: str | os.PathLike, precision: str | None = None, threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise BackboneError(f"{path}: ONNX file not found")
        ov = import_openvino()
        core = shared_core()
        if precision is None:
            precision, why = cpu_precision(core)
            log.info("OpenVINO precision %s: %s", precision, why)
        if precision not in PRECISIONS:
            raise BackboneError(f"OpenVINO precision {precision!r}: choose one of {list(PRECISIONS)}")
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            model = core.read_model(str(path))
            compiled = core.compile_model(model, "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError / its own types for a bad file
            raise BackboneError(f"{path}: OpenVINO cannot load it ({_why_not(e)}); use --engine cpu "
                                f"(ONNX Runtime)") from None
        # The only references to OpenVINO's objects, released request first, before the interpreter
        # tears modules down (weakref.finalize also runs at exit): left to finalisation order, a
        # serve process ended with SIGSEGV after its last frame in ~1 run of 7 (test_serve kill-9).
        self._ov = {"request": compiled.create_infer_request(), "compiled": compiled, "model": model}
        weakref.finalize(self, _release, self._ov)
        self._config = config
        # a graph with dynamic input dims is recompiled for the shape the first run brings (and again
        # when it changes): the CPU plugin runs a static graph faster (WRN-50-2 at 256 px, bf16, 2
        # threads, idle box: 17.8 vs 24.3 ms median)
        self._dynamic = any(not p.get_partial_shape().is_static for p in model.inputs)
        self.path, self.precision = path, precision
        self.threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        self.metadata = _metadata(model)
        self.inputs = tuple(_spec(p) for p in compiled.inputs)
        self.outputs = tuple(_spec(p) for p in compiled.outputs)
        del compiled, model  # OpenVINO's objects are held in self._ov only
        self._dtypes = {s.name: np.dtype(s.dtype) for s in self.inputs}
        self.version = ov.__version__.split("-")[0]
        self.description = f"openvino {self.version} [CPU, {precision}, {self.threads} threads]"
        log.info("engine %s: %s", path.name, self.description)

    def close(self) -> None:
        """Release the infer request and the compiled model (also done when the engine is collected and
        at interpreter exit); the engine cannot run afterwards."""
        _release(self._ov)

    def _compile_static(self, shapes: tuple[tuple[int, ...], ...]) -> None:
        """Recompile the graph for these input shapes (one per input); the previous request and
        compiled model are released first, request before model."""
        ov = import_openvino()
        model = self._ov["model"]
        try:
            model.reshape({port: ov.PartialShape(list(shape)) for port, shape in zip(model.inputs, shapes)})
            for key in ("shapes", "request", "compiled"):  # a failed compile leaves no stale request behind
                self._ov.pop(key, None)
            compiled = shared_core().compile_model(model, "CPU", self._config)
        except Exception as e:  # OpenVINO raises RuntimeError / its own types for a shape it cannot take
            raise BackboneError(f"{self.path.name}: OpenVINO cannot run input shape(s) {list(shapes)} "
                                f"({_why_not(e)})") from None
        self._ov.update(request=compiled.create_infer_request(), compiled=compiled, shapes=shapes)
        log.debug("engine %s: compiled for %s", self.path.name, shapes)

    def run(self, feeds: dict[str, np.ndarray], *, copy: bool = True) -> dict[str, np.ndarray]:
        """feeds: input name -> array (cast to the graph's dtype) -> output name -> new array; with
        ``copy=False`` the request's own output buffers, overwritten by the next ``run``. The inputs
        are shared with OpenVINO, not copied (the call is synchronous)."""
        missing = [s.name for s in self.inputs if s.name not in feeds]
        if missing:
            raise BackboneError(f"{self.path.name}: missing input(s) {missing}; the inputs are "
                                f"{[s.name for s in self.inputs]}")
        if not self._ov:
            raise BackboneError(f"{self.path.name}: this OpenVINO engine was closed")
        host = [np.ascontiguousarray(feeds[s.name], self._dtypes[s.name]) for s in self.inputs]
        shapes = tuple(h.shape for h in host)
        if self._dynamic and shapes != self._ov.get("shapes"):
            self._compile_static(shapes)
        result = self._ov["request"].infer(dict(enumerate(host)), share_inputs=True, share_outputs=not copy)
        return {s.name: np.array(result[i], copy=True) if copy else result[i] for i, s in enumerate(self.outputs)}
