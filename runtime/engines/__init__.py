"""Inference engines: one flat class per backend behind the ``Engine`` protocol.

- ``OrtEngine`` (onnxruntime_engine.py): ONNX Runtime, CPU by default, CUDA / TensorRT EPs on request.
- ``TrtEngine`` (tensorrt_engine.py): a serialized TensorRT engine (GPU machines only).
- ``OpenVinoEngine`` (openvino_engine.py): OpenVINO's CPU plugin on the same feature ONNX (the
  ``openvino`` extra; bf16 where the CPU has it).

choose.py decides which one runs, once at start-up, and opens it.
"""

from .base import Engine, TensorSpec
from .onnxruntime_engine import OrtEngine

__all__ = ["Engine", "TensorSpec", "OrtEngine"]
