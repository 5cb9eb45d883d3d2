"""The manifest beside TensorRT engines, and the check that they fit this machine (torch-free).

A serialized TensorRT engine runs only on the GPU model and TensorRT version that built it.
``edge-foct build-engines`` writes ``engine_manifest.json`` (export/tensorrt_build.py)::

    {"format": 1, "tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
     "precision": "fp16", "built": "2025-...Z", "timing_cache": "timing.cache",
     "rebuild_command": "edge-foct build-engines --onnx-dir onnx/ --out onnx/tensorrt --fp16",
     "engines": {"wide_resnet50_2": {"engine": "wide_resnet50_2.engine", "sha256": "...",
                 "onnx": "wide_resnet50_2.onnx", "onnx_sha256": "...", "precision": "fp16",
                 "metadata": {"edge_foct.feature_format": "...", ...},  # the ONNX graph's metadata_props
                 "profile": {"image": {"min": [1, 3, 256, 256], "opt": [...], "max": [...]}},
                 "trtexec": "trtexec --onnx=... --saveEngine=..."}}}

The runtime calls ``check_engine_manifest`` before deserialising and refuses a mismatch with the
command that rebuilds the engines on this machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .hashing import file_sha256
from .errors import EdgeFoctError

ENGINE_MANIFEST = "engine_manifest.json"
ENGINE_MANIFEST_FORMAT = 1
_KEYS = ("tensorrt_version", "gpu_name", "compute_capability", "precision", "engines", "rebuild_command")


class EngineManifestError(EdgeFoctError):
    """Engines that are missing, altered, or built for another GPU or TensorRT version."""


def format_cc(major: int, minor: int) -> str:
    """Compute capability as the manifest writes it: (8, 7) -> "8.7"."""
    return f"{int(major)}.{int(minor)}"


def read_engine_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """Load and shape-check ``folder/engine_manifest.json``."""
    path = Path(folder) / ENGINE_MANIFEST
    if not path.is_file():
        raise EngineManifestError(f"{path}: no engine manifest; build engines with "
                                  f"`edge-foct build-engines --onnx-dir ONNX_DIR --out {folder}`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != ENGINE_MANIFEST_FORMAT or any(k not in manifest for k in _KEYS):
        raise EngineManifestError(f"{path}: engine manifest format {manifest.get('format')!r} or keys not "
                                  f"understood (this runtime reads format {ENGINE_MANIFEST_FORMAT}); rebuild with "
                                  f"`edge-foct build-engines --onnx-dir ONNX_DIR --out {folder}`")
    return manifest


def check_engine_manifest(manifest: dict[str, Any], gpu_name: str, compute_capability: str,
                          trt_version: str) -> None:
    """Raise EngineManifestError unless the engines were built for this GPU and TensorRT version.

    All three must be equal: an engine's kernels are chosen for one GPU model (same compute
    capability is not enough for TensorRT's tactic choices) and its format for one TensorRT release.
    """
    want = {"GPU": (manifest.get("gpu_name"), gpu_name),
            "compute capability": (manifest.get("compute_capability"), compute_capability),
            "TensorRT": (manifest.get("tensorrt_version"), trt_version)}
    bad = [f"{k} {built!r} (here {here!r})" for k, (built, here) in want.items()
           if str(built).strip() != str(here).strip()]
    if bad:
        raise EngineManifestError(f"engines were built for another machine: {', '.join(bad)}; rebuild them here "
                                  f"with `{manifest.get('rebuild_command', 'edge-foct build-engines --onnx-dir DIR')}`")


def engine_path(folder: str | os.PathLike, manifest: dict[str, Any], key: str) -> Path:
    """The engine file of graph ``key``, after checking it is the file the manifest recorded."""
    entry = manifest["engines"].get(key)
    if entry is None:
        raise EngineManifestError(f"{folder}: no engine {key!r} (has {sorted(manifest['engines'])}); "
                                  f"rebuild with `{manifest['rebuild_command']}`")
    path = Path(folder) / entry["engine"]
    if not path.is_file() or file_sha256(path) != entry["sha256"]:
        raise EngineManifestError(f"{path}: missing or not the engine the manifest recorded; "
                                  f"rebuild with `{manifest['rebuild_command']}`")
    return path


def engine_for_onnx(folder: str | os.PathLike, manifest: dict[str, Any], onnx_sha256: str) -> Path:
    """The engine built from the ONNX graph with this sha256 (a bank records its backbone's), checked."""
    key = next((k for k, e in manifest["engines"].items() if e.get("onnx_sha256") == onnx_sha256), None)
    if key is None:
        raise EngineManifestError(f"{folder}: no engine was built from this backbone (sha256 {onnx_sha256[:12]}; "
                                  f"engines: {sorted(manifest['engines'])}); rebuild with "
                                  f"`{manifest['rebuild_command']}` on a folder holding it")
    return engine_path(folder, manifest, key)


def this_machine() -> tuple[str, str, str]:
    """(GPU name, compute capability, TensorRT version) of device 0, for ``check_engine_manifest``.

    Needs TensorRT and cuda-python (the ``gpu`` extra); raises EngineManifestError without them.
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineManifestError("TensorRT is not installed (import tensorrt failed): on a Jetson it comes "
                                  "with JetPack (python3-libnvinfer), on a PC `pip install tensorrt`") from None
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise EngineManifestError("cuda-python is not installed: pip install 'edge-foct[gpu]'") from None
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or not count:
        raise EngineManifestError(f"no CUDA GPU visible ({cudart.cudaGetErrorString(err)[1].decode()}); "
                                  f"TensorRT engines need one")
    err, prop = cudart.cudaGetDeviceProperties(0)
    if err != cudart.cudaError_t.cudaSuccess:
        raise EngineManifestError(f"cannot read the properties of CUDA device 0 "
                                  f"({cudart.cudaGetErrorString(err)[1].decode()})")
    raw = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    name = raw.split("\x00")[0].strip()  # a fixed-size C char array
    return name, format_cc(prop.major, prop.minor), str(trt.__version__)
