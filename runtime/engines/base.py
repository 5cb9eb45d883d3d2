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
    """Runs one graph. ``run`` returns arrays the caller owns (never views of engine buffers)."""

    #: backend and device, e.g. "onnxruntime[CPUExecutionProvider]"; printed once at start-up
    description: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: the graph's metadata_props (export writes backbone id, feature dim, ...)
    metadata: dict[str, str]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """feeds: input name -> array; returns output name -> array."""
        ...
