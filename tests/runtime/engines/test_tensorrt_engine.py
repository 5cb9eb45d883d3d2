"""TrtEngine: its refusal without TensorRT / a GPU; its buffer, graph and manifest bookkeeping against
CPU stand-ins of tensorrt and cuda-python (fake_gpu_stack.py); and (tensorrt-marked) the real runner
against ONNX Runtime on the same feature graph, on a machine that has TensorRT and a GPU."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from edge_foct.runtime import names
from edge_foct.runtime.cuda import probe
from edge_foct.runtime.engines import Engine, OrtEngine
from edge_foct.runtime.engines.tensorrt_engine import TrtEngine
from edge_foct.runtime.errors import GpuError

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here: the refusal path is not reachable")
def test_without_tensorrt_opening_an_engine_says_so(tmp_path):
    with pytest.raises(GpuError, match="TensorRT is not installed"):
        TrtEngine(tmp_path / "backbone.engine")


@pytest.fixture(scope="module")
def built(tmp_path_factory, random_backbone):
    """A fp32 engine of the random feature graph, built on this machine with the export helper."""
    if not HAS_TRT:
        pytest.skip("TensorRT is not installed: the TensorRT runner needs a Jetson / RTX box")
    devices, why = probe.cuda_devices()
    if not devices:
        pytest.skip(f"TensorRT present but no CUDA GPU: {why}")
    from edge_foct.export import tensorrt_build as tb

    onnx_dir = tmp_path_factory.mktemp("onnx")
    shutil.copy(random_backbone, onnx_dir / "backbone.onnx")
    out = tmp_path_factory.mktemp("engines")
    tb.build_engines(onnx_dir, out, tb.BuildOptions(sizes=(64, 96), max_batch=2), "edge-foct build-engines")
    return onnx_dir / "backbone.onnx", out / "backbone.engine"


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_matches_onnxruntime_and_owns_its_buffers(built, cuda_graph, rng):
    onnx_path, engine_path = built
    ref, trt = OrtEngine(onnx_path), TrtEngine(engine_path, cuda_graph=cuda_graph)
    assert isinstance(trt, Engine) and trt.description.startswith("tensorrt")
    assert [s.name for s in trt.inputs] == [names.BACKBONE_INPUT]
    outs = []
    for size in (64, 64, 96, 64):  # a repeat (same buffers / graph replay), a shape change, and back
        x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
        got = trt.run({names.BACKBONE_INPUT: x})[names.BACKBONE_OUTPUT]
        want = ref.run({names.BACKBONE_INPUT: x})[names.BACKBONE_OUTPUT]
        assert got.shape == want.shape == (1, size // 8, size // 8, want.shape[-1])
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))
        outs.append(got.copy())
        got[...] = np.nan  # the caller owns its output: scribbling on it cannot reach the engine
    again = trt.run({names.BACKBONE_INPUT: x})[names.BACKBONE_OUTPUT]
    np.testing.assert_array_equal(again, outs[-1])
    trt.close()


# --- the runner's own bookkeeping, against CPU stand-ins of tensorrt and cuda-python ------------
@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    from edge_foct.runtime import atomic
    from edge_foct.runtime.backbone import file_sha256
    from edge_foct.runtime.engine_manifest import ENGINE_MANIFEST, ENGINE_MANIFEST_FORMAT
    from edge_foct.runtime.engines import tensorrt_engine

    from .fake_gpu_stack import FakeCudart, FakeTensorRT

    rt = FakeCudart()
    monkeypatch.setattr(tensorrt_engine, "_import_gpu_stack", lambda: (FakeTensorRT(rt), rt))
    monkeypatch.setattr(tensorrt_engine, "this_machine", lambda: ("FakeGPU", "8.7", FakeTensorRT.__version__))
    path = tmp_path / "net.engine"
    path.write_bytes(b"fake engine")
    atomic.write_json(tmp_path / ENGINE_MANIFEST, {
        "format": ENGINE_MANIFEST_FORMAT, "tensorrt_version": FakeTensorRT.__version__, "gpu_name": "FakeGPU",
        "compute_capability": "8.7", "precision": "fp32", "rebuild_command": "edge-foct build-engines --onnx-dir X",
        "engines": {"net": {"engine": path.name, "sha256": file_sha256(path), "precision": "fp32",
                            "metadata": {"edge_foct.feature_format": "1"}}}})
    return path, rt


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_buffers_are_allocated_once_per_shape_and_outputs_are_the_callers(fake_engine, cuda_graph):
    path, rt = fake_engine
    engine = TrtEngine(path, cuda_graph=cuda_graph)
    assert isinstance(engine, Engine) and engine.metadata == {"edge_foct.feature_format": "1"}
    assert [(s.name, s.shape) for s in engine.inputs + engine.outputs] == [("x", ("dynamic", 3)), ("y", ("dynamic", 3))]
    x = np.arange(6, dtype=np.float64).reshape(2, 3)  # float64: cast to the graph's float32
    y1 = engine.run({"x": x})["y"]
    y2 = engine.run({"x": x + 1})["y"]
    np.testing.assert_array_equal(y1, 2 * x + 1)
    np.testing.assert_array_equal(y2, 2 * x + 3)
    assert y1.dtype == np.float32 and not np.shares_memory(y1, y2)
    assert rt.calls.count("malloc 24") == 2  # x and y, once for two runs of the same shape
    assert rt.calls.count("graph_launch") == (2 if cuda_graph else 0)
    assert rt.calls.count("enqueue") == (1 if cuda_graph else 2)  # with a graph: one warm-up enqueue only
    y3 = engine.run({"x": np.ones((4, 3), np.float32)})["y"]  # a new shape: free, re-allocate, re-capture
    np.testing.assert_array_equal(y3, np.full((4, 3), 3, np.float32))
    assert rt.calls.count("free") == 2 and rt.calls.count("malloc 48") == 2
    assert rt.calls.count("capture") == (2 if cuda_graph else 0)
    assert rt.calls.count("graph_destroy") == (1 if cuda_graph else 0)
    engine.close()
    assert not rt.live and rt.calls[-1] == "stream_destroy"
    engine.close()  # idempotent


def test_refusals_name_the_fix(fake_engine, tmp_path):
    from edge_foct.runtime.engine_manifest import EngineManifestError
    from edge_foct.runtime.errors import EdgeFoctError

    path, _ = fake_engine
    engine = TrtEngine(path)
    with pytest.raises(EdgeFoctError, match="missing input"):
        engine.run({"z": np.zeros((1, 3))})
    with pytest.raises(EdgeFoctError, match="outside the engine's optimisation profile"):
        engine.run({"x": np.zeros((9, 3))})
    other = tmp_path / "other.engine"
    other.write_bytes(b"fake engine")
    with pytest.raises(EngineManifestError, match="not listed"):
        TrtEngine(other)
    path.write_bytes(b"tampered")
    with pytest.raises(EngineManifestError, match="rebuild with"):
        TrtEngine(path)
