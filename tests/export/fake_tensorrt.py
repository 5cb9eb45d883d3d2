"""A recording stand-in of the ``tensorrt`` module (no GPU, no TensorRT, no torch): every call made
on the builder, parser and network is logged, so tests check the sequence of calls."""

from __future__ import annotations

import types


class _Rec:
    """Records every call made on it (and on objects it returns)."""

    def __init__(self, log: list, name: str) -> None:
        self._log, self._name = log, name

    def __getattr__(self, attr):
        def call(*args, **kwargs):
            self._log.append((f"{self._name}.{attr}", args, kwargs))
            if attr == "build_serialized_network":
                return b"ENGINE"
            if attr == "serialize":
                return b"CACHE"
            if attr == "parse_from_file":
                return True
            return _Rec(self._log, attr)
        return call

    def __setattr__(self, attr, value):
        if attr.startswith("_"):
            object.__setattr__(self, attr, value)
        else:
            self._log.append((f"{self._name}.{attr}=", (value,), {}))


def fake_tensorrt(log: list) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.0.1"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.Builder = lambda logger: _Rec(log, "builder")
    trt.OnnxParser = lambda network, logger: _Rec(log, "parser")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    return trt
