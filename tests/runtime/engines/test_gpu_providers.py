"""ONNX Runtime's GPU execution providers as options of OrtEngine, and the start-up engine choice."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from edge_foct.runtime import names
from edge_foct.runtime.cuda import probe
from edge_foct.runtime.engines import OrtEngine
from edge_foct.runtime.engines.choose import choose_engine
from edge_foct.runtime.engines.onnxruntime_engine import gpu_providers
from edge_foct.runtime.errors import BackboneError, EdgeFoctError, GpuError

HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


def test_gpu_provider_lists_end_on_the_cpu():
    providers, options = gpu_providers("cuda")
    assert providers == ["CUDAExecutionProvider", "CPUExecutionProvider"] and len(options) == 2
    providers, options = gpu_providers("tensorrt", cache_dir="/tmp/trt", fp16=True)
    assert providers == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert options[0]["trt_engine_cache_path"] == "/tmp/trt" and options[0]["trt_fp16_enable"] == "True"
    with pytest.raises(BackboneError, match="'rocm'"):
        gpu_providers("rocm")


def test_cpu_default_is_unchanged(random_backbone):
    engine = OrtEngine(random_backbone)
    assert "CPUExecutionProvider" in engine.description
    assert OrtEngine(random_backbone, provider_options=[{}]).inputs[0].name == names.BACKBONE_INPUT


@pytest.mark.skipif(HAS_CUDA_EP, reason="this onnxruntime build has the CUDA provider")
def test_a_missing_gpu_provider_is_refused_not_dropped(random_backbone):
    providers, options = gpu_providers("cuda")
    with pytest.raises(BackboneError, match="CUDAExecutionProvider"):
        OrtEngine(random_backbone, providers, provider_options=options)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA_EP, reason="needs onnxruntime-gpu (this build has no CUDA provider)")
def test_cuda_provider_matches_cpu(random_backbone, rng):
    if not probe.cuda_devices()[0]:
        pytest.skip(f"no CUDA GPU: {probe.cuda_devices()[1]}")
    x = {names.BACKBONE_INPUT: rng.standard_normal((1, 3, 64, 64)).astype("float32")}
    providers, options = gpu_providers("cuda")
    got = OrtEngine(random_backbone, providers, provider_options=options).run(x)[names.BACKBONE_OUTPUT]
    want = OrtEngine(random_backbone).run(x)[names.BACKBONE_OUTPUT]
    assert abs(got - want).max() <= 1e-3 * abs(want).max()


def test_engine_choice_here(tmp_path):
    choice = choose_engine(tmp_path)  # an empty folder: no manifest, so never TensorRT
    assert choice.backend in ("onnxruntime", "openvino")  # openvino: an x86 CPU with the extra installed
    assert "TensorRT:" in choice.reason and choice.describe().startswith(f"{choice.backend} [")
    if choice.backend == "onnxruntime":
        assert "OpenVINO:" in choice.reason  # why not OpenVINO, beside why not the GPU paths
    with pytest.raises(GpuError, match="TensorRT engines asked for"):
        choose_engine(tmp_path, prefer="tensorrt")
    with pytest.raises(EdgeFoctError, match="'fastest'"):
        choose_engine(prefer="fastest")
    if not (probe.cuda_devices()[0] and HAS_CUDA_EP):
        assert choice.backend == "openvino" or choice.providers == ("CPUExecutionProvider",)
        with pytest.raises(GpuError, match="ONNX Runtime CUDA asked for"):
            choose_engine(prefer="cuda")
