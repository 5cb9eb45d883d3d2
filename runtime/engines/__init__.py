"""Inference engines: one flat class per backend behind the ``Engine`` protocol.

- ``OrtEngine`` (onnxruntime_engine.py): ONNX Runtime, CPU by default, CUDA / TensorRT EPs on request.
- ``TrtEngine`` (tensorrt_engine.py): a serialized TensorRT engine (GPU machines only).
"""

from .base import Engine, TensorSpec
from .onnxruntime_engine import OrtEngine

__all__ = ["Engine", "TensorSpec", "OrtEngine"]
