"""TensorRT engine runner (GPU machines only). cuda-python does the device memory, stream and graphs.

TensorRT and cuda-python are imported when an engine is opened, never at module import, so the
runtime imports on any machine; opening one where either (or a GPU) is missing raises GpuError.
Needs TensorRT >= 8.5 (the name-based I/O API: ``set_input_shape``, ``execute_async_v3``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..engine_manifest import (EngineManifestError, check_engine_manifest, engine_path, read_engine_manifest,
                               this_machine)
from ..errors import EdgeFoctError, GpuError
from .base import TensorSpec

log = logging.getLogger(__name__)


def _import_gpu_stack():
    try:
        import tensorrt as trt
    except ImportError:
        raise GpuError("TensorRT is not installed (JetPack's python3-libnvinfer on a Jetson, `pip install tensorrt` "
                       "on a PC); without it use the ONNX Runtime engine") from None
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise GpuError("cuda-python is not installed: pip install 'edge-foct[gpu]'") from None
    return trt, cudart


class TrtEngine:
    """One serialized TensorRT engine on CUDA device 0, checked against its folder's engine manifest.

    Buffer contract:
    - The engine owns one device buffer per graph input and output. They are allocated on the first
      ``run`` and again only when an input's shape changes (dynamic shapes); ``close`` frees them.
    - ``run(feeds)`` copies each feed (cast to the graph's dtype, made contiguous) into the engine's
      own input buffer on the engine's private stream; the caller's arrays are not kept.
    - Outputs are copied into fresh NumPy arrays that the caller owns: never views of engine memory,
      never overwritten by a later ``run``. ``run`` returns after its stream has synchronised.
    - ``cuda_graph=True``: TensorRT's enqueue is captured into a CUDA graph once per set of input
      shapes and replayed on later runs (saves the per-kernel launch cost on small engines); the
      copies stay outside the graph, since they read pageable caller memory. Best for static shapes:
      every shape change re-allocates the buffers and re-captures.
    - One execution context, one stream: not thread-safe; open one engine per thread.
    """

    def __init__(self, path: str | os.PathLike, cuda_graph: bool = False) -> None:
        path = Path(path)
        trt, self._rt = _import_gpu_stack()
        manifest = read_engine_manifest(path.parent)
        check_engine_manifest(manifest, *this_machine())
        key = next((k for k, e in manifest["engines"].items() if e.get("engine") == path.name), None)
        if key is None:
            raise EngineManifestError(f"{path}: not listed in {path.parent}'s engine manifest; rebuild with "
                                      f"`{manifest['rebuild_command']}`")
        engine_path(path.parent, manifest, key)  # same file as built (sha256)
        self.path, self.cuda_graph = path, cuda_graph
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)  # kept: TensorRT wants the runtime to outlive its engines
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise GpuError(f"{path}: TensorRT {trt.__version__} cannot deserialise it; rebuild with "
                           f"`{manifest['rebuild_command']}`")
        self._context = self._engine.create_execution_context()
        self._stream = self._cuda(self._rt.cudaStreamCreateWithFlags(self._rt.cudaStreamNonBlocking), "stream")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._out_shapes: dict[str, tuple[int, ...]] = {}
        self._in_shapes: tuple | None = None
        self._graph = self._graph_exec = None
        specs = [self._spec(trt, self._engine.get_tensor_name(i)) for i in range(self._engine.num_io_tensors)]
        is_input = {s.name: self._engine.get_tensor_mode(s.name) == trt.TensorIOMode.INPUT for s in specs}
        self.inputs = tuple(s for s in specs if is_input[s.name])
        self.outputs = tuple(s for s in specs if not is_input[s.name])
        self._dtypes = {s.name: np.dtype(s.dtype) for s in specs}
        self.metadata = {str(k): str(v) for k, v in manifest["engines"][key].get("metadata", {}).items()}
        self.description = (f"tensorrt {trt.__version__} [{manifest['gpu_name']} sm {manifest['compute_capability']}, "
                            f"{manifest['engines'][key].get('precision', manifest['precision'])}"
                            f"{', cuda graph' if cuda_graph else ''}]")
        log.info("engine %s: %s", path.name, self.description)

    def _spec(self, trt, name: str) -> TensorSpec:
        dims = tuple(int(d) if d >= 0 else "dynamic" for d in self._engine.get_tensor_shape(name))
        return TensorSpec(name, np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))).name, dims)

    def _cuda(self, result, what: str):
        """cuda-python returns (error, *values): raise on an error, else return the value(s)."""
        err, *values = result
        if err != self._rt.cudaError_t.cudaSuccess:
            raise GpuError(f"{self.path.name}: CUDA {what} failed: {self._rt.cudaGetErrorString(err)[1].decode()}")
        return values[0] if len(values) == 1 else tuple(values) or None

    def _allocate(self, feeds: dict[str, np.ndarray]) -> None:
        """(Re)bind every buffer for these input shapes; capture the CUDA graph when asked."""
        self._release_buffers()
        for spec in self.inputs:
            if not self._context.set_input_shape(spec.name, feeds[spec.name].shape):
                raise EdgeFoctError(f"{self.path.name}: input {spec.name!r} shape {feeds[spec.name].shape} is outside "
                                    f"the engine's optimisation profile ({spec.shape}); rebuild with other sizes")
        for spec in self.inputs + self.outputs:
            is_in = spec in self.inputs
            shape = tuple(feeds[spec.name].shape) if is_in else tuple(self._context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise GpuError(f"{self.path.name}: output {spec.name!r} has a data-dependent shape {shape}, which "
                               f"this runner does not support")
            nbytes = max(1, int(np.prod(shape)) * self._dtypes[spec.name].itemsize)
            ptr = int(self._cuda(self._rt.cudaMalloc(nbytes), f"malloc {nbytes} B"))
            self._buffers[spec.name] = (ptr, nbytes)
            self._context.set_tensor_address(spec.name, ptr)
            if not is_in:
                self._out_shapes[spec.name] = shape
        self._in_shapes = tuple(feeds[s.name].shape for s in self.inputs)
        if self.cuda_graph:
            self._enqueue()  # TensorRT finishes its deferred shape work on the first enqueue, outside capture
            self._cuda(self._rt.cudaStreamSynchronize(self._stream), "synchronize")
            mode = self._rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            self._cuda(self._rt.cudaStreamBeginCapture(self._stream, mode), "graph capture")
            self._enqueue()
            self._graph = self._cuda(self._rt.cudaStreamEndCapture(self._stream), "graph capture")
            self._graph_exec = self._cuda(self._rt.cudaGraphInstantiate(self._graph, 0), "graph instantiate")

    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(int(self._stream)):
            raise GpuError(f"{self.path.name}: TensorRT enqueue failed (see the TensorRT log lines above)")

    def run(self, feeds: dict[str, np.ndarray], *, copy: bool = True) -> dict[str, np.ndarray]:
        """feeds: input name -> array (any layout; cast to the graph dtype) -> output name -> new array
        (copied from the device either way: ``copy`` changes nothing)."""
        missing = [s.name for s in self.inputs if s.name not in feeds]
        if missing:
            raise EdgeFoctError(f"{self.path.name}: missing input(s) {missing}; the inputs are "
                                f"{[s.name for s in self.inputs]}")
        host = {s.name: np.ascontiguousarray(feeds[s.name], self._dtypes[s.name]) for s in self.inputs}
        if tuple(host[s.name].shape for s in self.inputs) != self._in_shapes:
            self._allocate(host)
        h2d, d2h = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, arr in host.items():
            ptr, _ = self._buffers[name]
            self._cuda(self._rt.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, self._stream), "copy in")
        if self._graph_exec is not None:
            self._cuda(self._rt.cudaGraphLaunch(self._graph_exec, self._stream), "graph launch")
        else:
            self._enqueue()
        out = {s.name: np.empty(self._out_shapes[s.name], self._dtypes[s.name]) for s in self.outputs}
        for name, arr in out.items():
            ptr, _ = self._buffers[name]
            self._cuda(self._rt.cudaMemcpyAsync(arr.ctypes.data, ptr, arr.nbytes, d2h, self._stream), "copy out")
        self._cuda(self._rt.cudaStreamSynchronize(self._stream), "synchronize")
        return out

    def _release_buffers(self) -> None:
        if self._graph_exec is not None:
            self._rt.cudaGraphExecDestroy(self._graph_exec)
            self._rt.cudaGraphDestroy(self._graph)
            self._graph = self._graph_exec = None
        for ptr, _ in self._buffers.values():
            self._rt.cudaFree(ptr)
        self._buffers.clear()
        self._out_shapes.clear()
        self._in_shapes = None

    def close(self) -> None:
        """Free the buffers, the graph and the stream (also done when the engine is collected)."""
        if getattr(self, "_stream", None) is None:
            return
        self._release_buffers()
        self._rt.cudaStreamDestroy(self._stream)
        self._stream = None

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> "TrtEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
