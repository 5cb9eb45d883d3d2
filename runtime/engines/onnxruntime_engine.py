"""ONNX Runtime engine. Buffers: ORT allocates each output per call; the caller owns it."""

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


class OrtEngine:
    """One ONNX graph in an ``onnxruntime.InferenceSession``.

    providers: ordered ONNX Runtime execution providers; default ``["CPUExecutionProvider"]``.
    Providers that this onnxruntime build lacks are refused here, once, not silently dropped.
    threads: intra-op threads (default: ORT's choice, all physical cores).
    """

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
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
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:  # onnxruntime raises several unrelated types for a bad file
            raise BackboneError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})") from None
        self.path = path
        self.inputs = tuple(_spec(a) for a in self.session.get_inputs())
        self.outputs = tuple(_spec(a) for a in self.session.get_outputs())
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.description = f"onnxruntime {ort.__version__} [{', '.join(self.session.get_providers())}]"
        log.info("engine %s: %s", path.name, self.description)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.outputs]
        return dict(zip(names, self.session.run(names, feeds)))
