"""The ``Engine`` protocol every backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of a graph input or output; a str dimension is dynamic."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@runtime_checkable
class Engine(Protocol):
    """Runs one graph. ``run`` returns arrays the caller owns (never views of engine buffers), unless
    the caller says ``copy=False``: then an engine may hand out its own output buffers, valid until its
    next ``run`` (OpenVINO; the per-frame path, where the copy cost 1.4 ms of a 17 ms WRN-50-2 frame).
    Engines whose results are new arrays anyway ignore it."""

    #: backend and device, e.g. "onnxruntime[CPUExecutionProvider]"; printed once at start-up
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: the graph's metadata_props (export writes backbone id, feature dim, ...)
    metadata: dict[str, str]

    def run(self, feeds: dict[str, np.ndarray], *, copy: bool = True) -> dict[str, np.ndarray]:
        """feeds: input name -> array; returns output name -> array."""
        ...
