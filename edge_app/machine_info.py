"""The machine a benchmark ran on: CPU/GPU name, cores, load, library versions, git commit.

Every benchmark record (`edge-foct eval`, `edge-foct bench`, benchmarks/) carries this, so a
number is never separated from where it was measured. Nothing here imports torch or a GPU
library: versions come from package metadata, the GPU name from ``nvidia-smi`` when present.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

#: distributions whose versions matter for the numbers (absent ones are left out)
LIBRARIES = ("edge-foct", "numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "opencv-python-headless",
             "opencv-python", "scikit-learn", "threadpoolctl", "torch", "tensorrt", "numba-cuda", "cuda-python")
#: CPU flags that change which kernels ONNX Runtime, OpenVINO and BLAS run (and so the numbers)
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                "amx_bf16", "amx_int8", "asimd", "sve")

_REPO = Path(__file__).resolve().parents[1]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The KERNEL_FLAGS this CPU has (/proc/cpuinfo; empty where it is not readable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in KERNEL_FLAGS if f in have]
    except OSError:
        pass
    return []


def kernel_path(graph: str | os.PathLike, flags: list[str] | None = None) -> str:
    """How the feature graph's convolutions run here: "float32", or int8 with the CPU's dot-product
    path (ONNX Runtime's u8s8 kernels saturate without VNNI, so int8 features differ between CPUs)."""
    import onnx

    from edge_foct.export.dequantize import is_quantized  # onnx only, no torch

    if not is_quantized(onnx.load(str(graph), load_external_data=False)):
        return "float32"
    flags = cpu_flags() if flags is None else flags
    vnni = [f for f in flags if f in ("avx512_vnni", "avx_vnni", "amx_int8")]
    return f"int8 ({'VNNI: ' + '+'.join(vnni) if vnni else 'no VNNI: u8s8 may saturate'}; CPU-dependent)"


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _gpus() -> list[str]:
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"])
    return [line.strip() for line in out.splitlines() if line.strip()] if out else []


def _git() -> dict[str, Any]:
    commit = _run(["git", "rev-parse", "HEAD"], _REPO)
    if commit is None:
        return {"commit": None}
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], _REPO)
    return {"commit": commit, "dirty": bool(dirty)}


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_info() -> dict[str, Any]:
    """JSON-able description of this machine and checkout (see benchmarks/README.md)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": _cpu_name(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "load_average_1_5_15": [round(x, 2) for x in load] if load else None,
        "gpus": _gpus(),
        "os": platform.platform(),
        "versions": _versions(),
        "git": _git(),
    }


def describe(info: dict[str, Any]) -> str:
    """One line for tables: 'CPU (N cores, load x) | GPU | commit'."""
    gpu = "; ".join(info["gpus"]) or "no GPU"
    load = info.get("load_average_1_5_15")
    commit = info["git"].get("commit")
    tag = f"{commit[:10]}{'+dirty' if info['git'].get('dirty') else ''}" if commit else "no git"
    flags = " ".join(info.get("cpu_flags", [])) or "no listed flags"
    return (f"{info['cpu']} ({info['cores_usable']} usable cores, {flags}, load {load[0] if load else '?'}) | {gpu} | "
            f"onnxruntime {info['versions'].get('onnxruntime', info['versions'].get('onnxruntime-gpu', '?'))}, "
            f"numpy {info['versions'].get('numpy', '?')} | commit {tag}")
