"""Stand-ins for ``tensorrt`` and ``cuda.bindings.runtime`` that run on the CPU, for TrtEngine's own logic.

"Device" buffers are host memory at real addresses, so the runner's copies are real ``memmove``s;
the fake network computes ``y = 2 x + 1`` from whatever addresses it was bound to; a CUDA graph
replays the enqueue recorded during capture. Every call is logged, so a test can assert what the
runner allocated, captured and freed. This checks TrtEngine's buffer and graph bookkeeping, not
TensorRT or a GPU (the tensorrt-marked test does that on a real device).
"""

from __future__ import annotations

import ctypes
import enum
import types

import numpy as np


class Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2


class FakeCudart:
    cudaError_t = Err
    cudaStreamNonBlocking = 1
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.live: dict[int, np.ndarray] = {}  # pointer -> backing host buffer
        self.capturing: list | None = None

    def cudaGetErrorString(self, err):
        return Err.cudaSuccess, Err(err).name.encode()

    def cudaStreamCreateWithFlags(self, flags):
        self.calls.append("stream")
        return Err.cudaSuccess, 7

    def cudaStreamDestroy(self, stream):
        self.calls.append("stream_destroy")
        return (Err.cudaSuccess,)

    def cudaMalloc(self, nbytes):
        buf = np.zeros(nbytes, np.uint8)
        self.live[buf.ctypes.data] = buf
        self.calls.append(f"malloc {nbytes}")
        return Err.cudaSuccess, buf.ctypes.data

    def cudaFree(self, ptr):
        del self.live[ptr]
        self.calls.append("free")
        return (Err.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        ctypes.memmove(dst, src, nbytes)
        return (Err.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):
        return (Err.cudaSuccess,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing = []
        self.calls.append("capture")
        return (Err.cudaSuccess,)

    def cudaStreamEndCapture(self, stream):
        graph, self.capturing = self.capturing, None
        return Err.cudaSuccess, graph

    def cudaGraphInstantiate(self, graph, flags):
        return Err.cudaSuccess, list(graph)

    def cudaGraphLaunch(self, graph_exec, stream):
        self.calls.append("graph_launch")
        for work in graph_exec:
            work()
        return (Err.cudaSuccess,)

    def cudaGraphExecDestroy(self, graph_exec):
        self.calls.append("graph_destroy")
        return (Err.cudaSuccess,)

    def cudaGraphDestroy(self, graph):
        return (Err.cudaSuccess,)


class _Context:
    def __init__(self, rt: FakeCudart) -> None:
        self.rt, self.shape, self.addr = rt, None, {}

    def set_input_shape(self, name, shape):
        if len(shape) != 2 or shape[1] != 3 or not 1 <= shape[0] <= 8:  # the "profile": (1..8, 3)
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shape

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr

    def execute_async_v3(self, stream):
        n = int(np.prod(self.shape))
        src, dst = self.addr["x"], self.addr["y"]

        def work():
            x = np.ctypeslib.as_array(ctypes.cast(src, ctypes.POINTER(ctypes.c_float)), (n,))
            y = np.ctypeslib.as_array(ctypes.cast(dst, ctypes.POINTER(ctypes.c_float)), (n,))
            y[:] = 2 * x + 1

        if self.rt.capturing is not None:
            self.rt.capturing.append(work)
        else:
            self.rt.calls.append("enqueue")
            work()
        return True


class _Engine:
    num_io_tensors = 2

    def __init__(self, rt: FakeCudart) -> None:
        self.rt = rt

    def get_tensor_name(self, i):
        return ("x", "y")[i]

    def get_tensor_mode(self, name):
        return FakeTensorRT.TensorIOMode.INPUT if name == "x" else FakeTensorRT.TensorIOMode.OUTPUT

    def get_tensor_shape(self, name):
        return (-1, 3)

    def get_tensor_dtype(self, name):
        return "float"

    def create_execution_context(self):
        return _Context(self.rt)


class FakeTensorRT:
    __version__ = "10.0.0-fake"
    TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")

    class Logger:
        WARNING = 2

        def __init__(self, level) -> None:
            pass

    def __init__(self, rt: FakeCudart) -> None:
        rt_ref = rt

        class Runtime:
            def __init__(self, logger) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes):
                return _Engine(rt_ref) if data == b"fake engine" else None

        self.Runtime = Runtime

    @staticmethod
    def nptype(dtype):
        return np.float32
