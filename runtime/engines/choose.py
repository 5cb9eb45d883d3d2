"""Which engine a feature graph runs on, decided once at start-up (``edge-foct doctor`` prints it).

Order under ``auto``: TensorRT engines (when a folder of engines built on this machine is given,
TensorRT imports, a GPU is present and, when the backbone's sha256 is given, the folder holds an
engine built from that graph) > ONNX Runtime's CUDA provider (an onnxruntime-gpu build and
a GPU) > OpenVINO on the CPU (an x86 CPU and the ``openvino`` extra installed; precision bf16 where
the CPU has native bf16, else f32; not taken in bf16 for a backbone listed in ``BF16_LOSES_ACCURACY``)
> ONNX Runtime on the CPU. ``tensorrt``, ``cuda`` and
``openvino`` (``openvino:f32`` / ``openvino:bf16`` to fix the precision) ask for one path and fail
with the reason when it is not there; ``cpu`` is ONNX Runtime on the CPU. ORT's TensorRT provider is
never picked automatically (its first run builds engines for minutes); pass
``gpu_providers("tensorrt")`` to OrtEngine for that.

``open_engine`` opens the chosen engine with the thread plan's engine threads (runtime/threads.py).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from ..cuda import probe
from ..engine_manifest import check_engine_manifest, engine_for_onnx, read_engine_manifest, this_machine
from .. import names
from ..errors import BackboneError, EdgeFoctError, GpuError
from ..threads import ThreadPlan
from .base import Engine
from .onnxruntime_engine import OrtEngine
from .openvino_engine import PRECISIONS

CHOICES = ("auto", "tensorrt", "cuda", "openvino", "cpu")
X86 = ("x86_64", "amd64", "i686", "x86")


@dataclass(frozen=True)
class EngineChoice:
    """backend "tensorrt" (engine_dir holds the engines; engine_file: the backbone's, when its sha256
    was given), "onnxruntime" (with ``providers``) or "openvino" (with ``precision``)."""

    backend: str
    providers: tuple[str, ...]
    engine_dir: Path | None
    reason: str
    engine_file: Path | None = None
    precision: str | None = None  # "f32" | "bf16" on the CPU (openvino, onnxruntime); None on a GPU

    def where(self) -> str:
        if self.engine_file is not None:
            return f"TensorRT engine {self.engine_file}"
        if self.backend == "tensorrt":
            return f"TensorRT engines in {self.engine_dir}"
        if self.backend == "openvino":
            return f"openvino [CPU, {self.precision}]"
        return f"onnxruntime [{', '.join(self.providers)}]"

    def describe(self) -> str:
        return f"{self.where()} ({self.reason})"


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


#: Backbones measured to lose accuracy in bf16, by backbone id (the graph's metadata): ``auto`` does not
#: take OpenVINO bf16 for them (ONNX Runtime f32 instead, the numbers eval reports on every machine);
#: ``--engine openvino`` still can. The value is the measurement, said in the start-up line.
BF16_LOSES_ACCURACY = {
    "efficientnet-lite0:output:tf": (
        "bf16 moved its image AUROC by up to 0.82 points (metal_plate, 2 shots; the bar is 0.3) for 0.7 ms "
        "(3.35 vs 4.02 ms a frame; benchmarks/results/engine_parity/default-backbone)"),
}


def _openvino_blocker(graph: str | os.PathLike | None = None) -> tuple[str | None, str, str, str | None]:
    """(why OpenVINO cannot run here -- or cannot read ``graph`` when given -- or None when it can,
    precision for this CPU, why that precision, the graph's backbone id when given)."""
    machine = platform.machine()
    if machine.lower() not in X86:
        return f"{machine} is not an x86 CPU (OpenVINO's CPU plugin is taken on x86 only)", "f32", "", None
    try:
        import openvino as ov
    except ImportError:
        return "not installed (pip install 'edge-foct[openvino]')", "f32", "", None
    from .openvino_engine import cpu_precision, read_blocker, shared_core

    core = shared_core()
    if "CPU" not in core.available_devices:
        return f"openvino {ov.__version__} lists no CPU device ({core.available_devices})", "f32", "", None
    blocker, metadata = read_blocker(graph, core) if graph is not None else (None, {})
    return blocker, *cpu_precision(core), metadata.get(names.META_BACKBONE_ID)


def choose_engine(engine_dir: str | os.PathLike | None = None, prefer: str = "auto",
                  onnx_sha256: str | None = None, graph: str | os.PathLike | None = None) -> EngineChoice:
    """The engine path for this machine; raises GpuError when ``prefer`` names a path that is not here.
    ``onnx_sha256``: the feature graph's; TensorRT is then taken only with an engine built from it.
    ``graph``: the feature graph; OpenVINO is then taken only when it can read it (its ONNX reader
    does not convert operator-oriented int8 graphs such as QLinearConv ones).
    prefer: one of CHOICES, or "openvino:f32" / "openvino:bf16"."""
    asked = prefer
    prefer, colon, asked_precision = prefer.partition(":")
    if prefer not in CHOICES or (colon and (prefer != "openvino" or asked_precision not in PRECISIONS)):
        raise EdgeFoctError(f"engine {asked!r} is not one of {list(CHOICES)} (or openvino:f32, openvino:bf16)")
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
    if prefer in ("auto", "openvino"):
        blocker, precision, why, backbone_id = _openvino_blocker(graph)
        if blocker is None and prefer == "auto" and precision == "bf16" and backbone_id in BF16_LOSES_ACCURACY:
            blocker = f"bf16 not taken for {backbone_id}: {BF16_LOSES_ACCURACY[backbone_id]}"
        elif blocker is None:
            if asked_precision:
                precision, why = asked_precision, "asked for"
            return EngineChoice("openvino", (), None, "; ".join(notes + [f"OpenVINO on the CPU, {precision}: {why}"]),
                                precision=precision)
        if prefer == "openvino":
            raise BackboneError(f"OpenVINO asked for, but {blocker}")
        notes.append(f"OpenVINO: {blocker}")
    return EngineChoice("onnxruntime", ("CPUExecutionProvider",), None,
                        "; ".join(notes) if notes else "asked for", precision="f32")


def open_engine(choice: EngineChoice, graph: str | os.PathLike, plan: ThreadPlan | None = None) -> Engine:
    """The engine ``choice`` names for the feature graph ``graph`` (the TensorRT engine built from it
    when the backend is TensorRT), with the plan's engine threads (None: each library's default)."""
    if choice.backend == "tensorrt":
        from .tensorrt_engine import TrtEngine  # imports TensorRT when called, GPU machines only

        if choice.engine_file is None:
            raise GpuError("TensorRT chosen without the backbone's engine file (give the graph's sha256 to "
                           "choose_engine)")
        return TrtEngine(choice.engine_file)
    threads = plan.engine if plan else None
    if choice.backend == "openvino":
        from .openvino_engine import OpenVinoEngine

        return OpenVinoEngine(graph, choice.precision, threads)
    spin = plan.engine_spin if plan else True
    return OrtEngine(graph, providers=list(choice.providers), threads=threads, spin=spin)
