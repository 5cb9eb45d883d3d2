"""ONNX Runtime engine. Buffers: ORT allocates each output per call; the caller owns it.

GPU execution providers: ``gpu_providers("cuda" | "tensorrt")`` gives the provider list and
options for OrtEngine (an onnxruntime-gpu build on the target; the CPU wheel has neither).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import BackboneError
from .base import TensorSpec

log = logging.getLogger(__name__)

_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
           "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def _spec(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else str(d) for d in arg.shape)
    return TensorSpec(arg.name, _DTYPES.get(arg.type, arg.type), shape)


def gpu_providers(kind: str, cache_dir: str | os.PathLike | None = None, fp16: bool = False,
                  device_id: int = 0) -> tuple[list[str], list[dict[str, str]]]:
    """(providers, provider_options) for OrtEngine: "cuda" = CUDA EP then CPU; "tensorrt" = TensorRT
    EP (engines cached in ``cache_dir``: the first run builds them, minutes on a Jetson), CUDA for the
    nodes TensorRT does not take, then CPU."""
    cuda = ("CUDAExecutionProvider", {"device_id": str(device_id)})
    cpu = ("CPUExecutionProvider", {})
    if kind == "cuda":
        chosen = [cuda, cpu]
    elif kind == "tensorrt":
        trt = {"device_id": str(device_id), "trt_fp16_enable": str(fp16)}
        if cache_dir is not None:
            trt.update(trt_engine_cache_enable="True", trt_engine_cache_path=str(cache_dir),
                       trt_timing_cache_enable="True", trt_timing_cache_path=str(cache_dir))
        chosen = [("TensorrtExecutionProvider", trt), cuda, cpu]
    else:
        raise BackboneError(f"GPU execution provider kind {kind!r}: choose 'cuda' or 'tensorrt'")
    return [p for p, _ in chosen], [o for _, o in chosen]


class OrtEngine:
    """One ONNX graph in an ``onnxruntime.InferenceSession``.

    providers: ordered ONNX Runtime execution providers; default ``["CPUExecutionProvider"]``.
    provider_options: one dict per provider (same order), e.g. from ``gpu_providers``.
    Providers that this onnxruntime build lacks, or that fail to start (ORT would silently run on
    the CPU instead), are refused here, once, not silently dropped.
    threads: intra-op threads (default: ORT's choice, all physical cores); the graph's nodes run in
    sequence (one inter-op thread). spin: whether the intra-op threads busy-wait between runs (ORT's
    default); off, they sleep while the method step's BLAS threads run (runtime/threads.py).
    """

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None,
                 threads: int | None = None, provider_options: list[dict[str, str]] | None = None,
                 spin: bool = True) -> None:
        path = Path(path)
        if not path.is_file():
            raise BackboneError(f"{path}: ONNX file not found")
        providers = providers or ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise BackboneError(f"ONNX Runtime here has no {missing}; available: {ort.get_available_providers()}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers,
                                                provider_options=provider_options)
        except Exception as e:  # onnxruntime raises several unrelated types for a bad file
            raise BackboneError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})") from None
        dropped = [p for p in providers if p not in self.session.get_providers()]
        if dropped:
            raise BackboneError(f"{path}: ONNX Runtime could not start {dropped} (missing CUDA/cuDNN/TensorRT "
                                f"libraries?); run with the CPU provider or fix the GPU install")
        self.path = path
        self.inputs = tuple(_spec(a) for a in self.session.get_inputs())
        self.outputs = tuple(_spec(a) for a in self.session.get_outputs())
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.threads = threads or 0  # 0: ORT's own choice
        spun = "" if spin else ", no spin"
        self.description = (f"onnxruntime {ort.__version__} [{', '.join(self.session.get_providers())}] "
                            f"({threads or 'default'} threads{spun})")
        log.info("engine %s: %s", path.name, self.description)

    def run(self, feeds: dict[str, np.ndarray], *, copy: bool = True) -> dict[str, np.ndarray]:
        """-> new arrays (ONNX Runtime allocates them per run; ``copy`` changes nothing)."""
        names = [o.name for o in self.outputs]
        return dict(zip(names, self.session.run(names, feeds)))
