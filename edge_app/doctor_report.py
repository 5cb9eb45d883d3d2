"""What this machine can run (``edge-foct doctor``): CUDA, TensorRT, ONNX Runtime, OpenVINO, the
engine choice and why, the thread plan, and a bank's backbone when given."""

from __future__ import annotations

import platform
from pathlib import Path


def _openvino() -> tuple[str | None, list[str]]:
    """(OpenVINO's version or None, its devices)."""
    try:
        import openvino as ov
    except ImportError:
        return None, []
    from edge_foct.runtime.engines.openvino_engine import shared_core

    return ov.__version__.split("-")[0], list(shared_core().available_devices)


def collect(engine_dir: Path | None = None, bank_dir: Path | None = None, threads: int | None = None) -> dict:
    """Everything doctor prints, as a JSON-able dict."""
    import onnxruntime as ort

    from edge_foct import __version__
    from edge_foct.edge_app.inspect_session import bank_feature_graph, decide_serving
    from edge_foct.edge_app.machine_info import cpu_flags
    from edge_foct.runtime.bank import Bank
    from edge_foct.runtime.compute_backend import distance_runtime
    from edge_foct.runtime.cuda import probe
    from edge_foct.runtime.threads import plan_threads

    devices, dev_reason = probe.cuda_devices()
    nb_version, nb_usable, nb_reason = probe.numba_cuda()
    nvvm, nvvm_reason = probe.nvvm_version()
    trt, trt_reason = probe.tensorrt_version()
    graph = bank_feature_graph(Bank.load(bank_dir)) if bank_dir is not None else None
    choice = decide_serving(graph, engine_dir)
    engine = choice.engine
    ov_version, ov_devices = _openvino()
    plan = plan_threads(threads)
    return {
        "edge_foct": __version__,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}",
        "cuda_devices": [{"index": d.index, "name": d.name, "compute_capability": f"{d.compute_capability[0]}."
                          f"{d.compute_capability[1]}", "sm": d.sm, "memory_gib": d.memory_gib} for d in devices],
        "cuda_devices_note": dev_reason,
        "tensorrt": trt, "tensorrt_note": trt_reason,
        "cpu_flags": cpu_flags(),
        "onnxruntime": ort.__version__, "onnxruntime_providers": ort.get_available_providers(),
        "openvino": ov_version, "openvino_devices": ov_devices,
        "threads": {**plan.to_json(), "describe": plan.describe()},
        "numba_cuda": nb_version, "numba_cuda_device_usable": nb_usable, "numba_cuda_note": nb_reason,
        "nvvm": nvvm, "nvvm_note": nvvm_reason,
        "serve": {"engine": engine.backend, "providers": list(engine.providers),
                  "engine_dir": str(engine.engine_dir) if engine.engine_dir else None,
                  "engine_file": str(engine.engine_file) if engine.engine_file else None,
                  "engine_reason": engine.reason, "precision": engine.precision,
                  "compute": choice.compute, "compute_reason": choice.compute_reason,
                  "distances": distance_runtime(choice.compute, engine.backend),
                  "bank": str(bank_dir) if bank_dir is not None else None},
    }


def render(info: dict) -> str:
    devs = info["cuda_devices"]
    lines = [f"edge-foct {info['edge_foct']}, Python {info['python']}, {info['machine']}"]
    if devs:
        lines += [f"CUDA device {d['index']}: {d['name']}, compute capability {d['compute_capability']} "
                  f"({d['sm']}), {d['memory_gib']} GiB" for d in devs]
        lines.append(f"CUDA driver: {info['cuda_devices_note']}")
    else:
        lines.append(f"CUDA devices: none ({info['cuda_devices_note']})")
    lines.append(f"TensorRT: {info['tensorrt'] or 'not installed'}" + ("" if info["tensorrt"] else
                                                                       f" ({info['tensorrt_note']})"))
    lines.append(f"CPU flags that pick kernels: {' '.join(info['cpu_flags']) or 'none of those listed'}")
    lines.append(f"ONNX Runtime: {info['onnxruntime']}, providers {', '.join(info['onnxruntime_providers'])}")
    lines.append(f"OpenVINO: {info['openvino']}, devices {', '.join(info['openvino_devices'])}" if info["openvino"]
                 else "OpenVINO: not installed (pip install 'edge-foct[openvino]')")
    usable = "device usable" if info["numba_cuda_device_usable"] else "no usable device"
    lines.append(f"numba-cuda: {info['numba_cuda'] or 'not installed'}, {usable} ({info['numba_cuda_note']})")
    lines.append(f"libNVVM: {info['nvvm'] or 'not found'} ({info['nvvm_note']})")
    s = info["serve"]
    engine = (f"TensorRT engine {s['engine_file']}" if s["engine_file"] else
              f"TensorRT engines in {s['engine_dir']}" if s["engine"] == "tensorrt"
              else f"openvino [CPU, {s['precision']}]" if s["engine"] == "openvino"
              else f"onnxruntime [{', '.join(s['providers'])}]")
    lines.append(f"serve would take: engine {engine}; compute backend {s['compute']}")
    lines.append(f"  engine: {s['engine_reason']}")
    if s["engine"] == "tensorrt" and s["bank"] is None:
        lines.append("  (no --bank: not checked that the folder holds an engine built from the bank's backbone)")
    if s["engine"] == "openvino" and s["precision"] == "bf16" and s["bank"] is None:
        lines.append("  (no --bank: a backbone measured to lose accuracy in bf16, such as the default "
                     "EfficientNet-Lite0, runs on ONNX Runtime f32 instead; give --bank to see its choice)")
    lines.append(f"  compute: {s['compute_reason']}")
    if s.get("distances") == "openvino":
        lines.append("  distances: the methods' GEMM on OpenVINO's threads (PatchCore's nearest search in the engine's "
                     "precision; ct / oct / foct's edge transport step as one f32 graph; NumPy's BLAS stays at the "
                     "plan's count)")
    lines.append(f"  {info['threads']['describe']}")
    return "\n".join(lines)
