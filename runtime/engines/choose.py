"""Which engine a feature graph runs on, decided once at start-up (``edge-foct doctor`` prints it).

Order under ``auto``: TensorRT engines (when a folder of engines built on this machine is given,
TensorRT imports, a GPU is present and, when the backbone's sha256 is given, the folder holds an
engine built from that graph) > ONNX Runtime's CUDA provider (an onnxruntime-gpu build and
a GPU) > ONNX Runtime on the CPU. ``tensorrt`` and ``cuda`` ask for one path and fail with the
reason when it is not there. ORT's TensorRT provider is never picked automatically (its first run
builds engines for minutes); pass ``gpu_providers("tensorrt")`` to OrtEngine for that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from ..cuda import probe
from ..engine_manifest import check_engine_manifest, engine_for_onnx, read_engine_manifest, this_machine
from ..errors import EdgeFoctError, GpuError

CHOICES = ("auto", "tensorrt", "cuda", "cpu")


@dataclass(frozen=True)
class EngineChoice:
    """backend "tensorrt" (engine_dir holds the engines; engine_file: the backbone's, when its sha256
    was given) or "onnxruntime" (with ``providers``)."""

    backend: str
    providers: tuple[str, ...]
    engine_dir: Path | None
    reason: str
    engine_file: Path | None = None

    def describe(self) -> str:
        where = f"TensorRT engines in {self.engine_dir}" if self.backend == "tensorrt" else \
            f"onnxruntime [{', '.join(self.providers)}]"
        if self.engine_file is not None:
            where = f"TensorRT engine {self.engine_file}"
        return f"{where} ({self.reason})"


def _tensorrt_blocker(engine_dir: Path | None, onnx_sha256: str | None = None) -> tuple[str | None, Path | None]:
    """(why the TensorRT path cannot run here or None when it can, the backbone's engine file if asked)."""
    if engine_dir is None:
        return "no engine folder given (build one with `edge-foct build-engines`)", None
    version, why = probe.tensorrt_version()
    if version is None:
        return why, None
    devices, why = probe.cuda_devices()
    if not devices:
        return why, None
    try:
        manifest = read_engine_manifest(engine_dir)
        check_engine_manifest(manifest, *this_machine())
        return None, engine_for_onnx(engine_dir, manifest, onnx_sha256) if onnx_sha256 else None
    except EdgeFoctError as e:  # the manifest's own one-line reason, with the rebuild command
        return str(e), None


def choose_engine(engine_dir: str | os.PathLike | None = None, prefer: str = "auto",
                  onnx_sha256: str | None = None) -> EngineChoice:
    """The engine path for this machine; raises GpuError when ``prefer`` names a path that is not here.
    ``onnx_sha256``: the feature graph's; TensorRT is then taken only with an engine built from it."""
    if prefer not in CHOICES:
        raise EdgeFoctError(f"engine {prefer!r} is not one of {list(CHOICES)}")
    engine_dir = Path(engine_dir) if engine_dir is not None else None
    notes = []
    if prefer in ("auto", "tensorrt"):
        blocker, engine_file = _tensorrt_blocker(engine_dir, onnx_sha256)
        if blocker is None:
            return EngineChoice("tensorrt", (), engine_dir, "engines match this GPU and TensorRT", engine_file)
        if prefer == "tensorrt":
            raise GpuError(f"TensorRT engines asked for, but {blocker}")
        notes.append(f"TensorRT: {blocker}")
    if prefer in ("auto", "cuda"):
        devices, why = probe.cuda_devices()
        has_ep = "CUDAExecutionProvider" in ort.get_available_providers()
        if devices and has_ep:
            return EngineChoice("onnxruntime", ("CUDAExecutionProvider", "CPUExecutionProvider"), None,
                                f"{devices[0].name} {devices[0].sm}")
        blocker = why if not devices else f"onnxruntime {ort.__version__} has no CUDA provider (CPU wheel)"
        if prefer == "cuda":
            raise GpuError(f"ONNX Runtime CUDA asked for, but {blocker}")
        notes.append(f"CUDA: {blocker}")
    return EngineChoice("onnxruntime", ("CPUExecutionProvider",), None,
                        "; ".join(notes) if notes else "asked for")
