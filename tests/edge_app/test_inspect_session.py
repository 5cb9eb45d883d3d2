"""open_session's two start-up decisions (backbone engine, compute backend): made once by
decide_serving, logged in one line each, the same ones `edge-foct doctor` prints, and real: the
TensorRT path opens the engine built from the bank's backbone. Here (no GPU, no TensorRT) that path
runs against stand-ins: the recording tensorrt module builds the folder and its manifest, and an
ONNX Runtime engine plays TrtEngine's contract (manifest checks, the manifest's metadata)."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_foct.edge_app import doctor_report
from edge_foct.edge_app.inspect_session import decide_serving, open_session
from edge_foct.runtime.bank import Bank
from edge_foct.runtime import names
from edge_foct.runtime.cuda import probe
from edge_foct.runtime.engine_manifest import engine_path, read_engine_manifest
from edge_foct.runtime.engines import OrtEngine, choose, tensorrt_engine
from edge_foct.runtime.errors import GpuError
from edge_foct.runtime.image_io import list_images, read_image

from ..export.fake_tensorrt import fake_tensorrt
from .test_serve import make_bank

HAS_GPU = probe.numba_cuda()[1] or bool(probe.cuda_devices()[0])


@pytest.fixture(scope="module")
def bank(tmp_path_factory, random_backbone, demo_category) -> Path:
    return make_bank(random_backbone, demo_category, tmp_path_factory.mktemp("session") / "bank")


@pytest.mark.skipif(HAS_GPU, reason="a GPU is present: auto would take it")
@pytest.mark.parametrize("openvino", ["absent", "as installed"])
def test_cpu_default_is_openvino_or_onnxruntime_cpu_and_numpy(bank, caplog, monkeypatch, openvino):
    if openvino == "absent":
        monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    expected = choose.choose_engine().backend  # openvino on an x86 CPU with the extra, else onnxruntime
    handed = []
    method_cls = type(Bank.load(bank).make_method())  # the bank's method class, where serve calls it
    monkeypatch.setattr(method_cls, "use_backend", lambda self, backend: handed.append(backend))
    with caplog.at_level(logging.INFO, logger="edge_foct"):
        session = open_session(bank)
    lines = [r.getMessage() for r in caplog.records]
    engine_lines = [m for m in lines if m.startswith("backbone engine:")]
    compute_lines = [m for m in lines if m.startswith("compute backend:")]
    if expected == "openvino":
        assert len(engine_lines) == 1 and "openvino [CPU, " in engine_lines[0]
        assert session.backbone.engine.description.startswith("openvino ")
    else:
        assert len(engine_lines) == 1 and "onnxruntime [CPUExecutionProvider]" in engine_lines[0]
        assert session.backbone.engine.description.startswith("onnxruntime ")
        assert "[CPUExecutionProvider]" in session.backbone.engine.description
    if openvino == "absent":
        assert expected == "onnxruntime" and ("OpenVINO: not installed" in engine_lines[0]
                                              or "not an x86 CPU" in engine_lines[0])
    assert len(compute_lines) == 1 and "numpy reference" in compute_lines[0]
    assert session.compute.name == "numpy" and handed == [session.compute]  # the method got it
    # beside OpenVINO the distance GEMM runs on OpenVINO's threads (runtime/engines/openvino_distance.py)
    assert ("distances on openvino" in compute_lines[0]) == (expected == "openvino")
    assert (type(session.compute.sq_dists).__name__ == "OpenVinoDistances") == (expected == "openvino")
    with pytest.raises(GpuError, match="compute backend 'cuda' asked for"):
        open_session(bank, compute="cuda")


@pytest.fixture
def engines(tmp_path, random_backbone, monkeypatch):
    """A TensorRT engine folder for the bank's backbone, built with the recording tensorrt stand-in, on
    a pretend Jetson: TensorRT, a GPU and this machine's identity answer as the manifest says."""
    from edge_foct.export import tensorrt_build as tb

    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    shutil.copy(random_backbone, onnx_dir / "backbone.onnx")
    machine = ("NVIDIA Jetson Orin", "8.7", "10.0.1")
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt([]))
    monkeypatch.setattr(tb, "this_machine", lambda: machine)
    out = tmp_path / "engines"
    tb.build_engines(onnx_dir, out, tb.BuildOptions(sizes=(64,)), "edge-foct build-engines --onnx-dir onnx")
    monkeypatch.setattr(choose, "this_machine", lambda: machine)
    monkeypatch.setattr(probe, "tensorrt_version", lambda: ("10.0.1", "importable"))
    monkeypatch.setattr(probe, "cuda_devices", lambda: ([probe.CudaDevice(0, machine[0], (8, 7), 30.0)], "1 device"))

    class OrtAsTensorRT:
        """TrtEngine's contract, run by ONNX Runtime: checked manifest entry, metadata from the manifest."""

        def __init__(self, path, cuda_graph=False) -> None:
            manifest = read_engine_manifest(Path(path).parent)
            key, entry = next((k, e) for k, e in manifest["engines"].items() if e["engine"] == Path(path).name)
            engine_path(Path(path).parent, manifest, key)
            self._ort = OrtEngine(onnx_dir / entry["onnx"])
            self.inputs, self.outputs, self.metadata = self._ort.inputs, self._ort.outputs, dict(entry["metadata"])
            self.description = "tensorrt 10.0.1 [stand-in]"
            self.path = Path(path)

        def run(self, feeds, *, copy=True):
            return self._ort.run(feeds)

    monkeypatch.setattr(tensorrt_engine, "TrtEngine", OrtAsTensorRT)
    return out


def test_engine_folder_built_from_the_backbone_is_taken_and_doctor_agrees(bank, engines, demo_category, caplog):
    with caplog.at_level(logging.INFO, logger="edge_foct"):
        session = open_session(bank, engine_dir=engines, compute="numpy")
    engine_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("backbone engine:")]
    assert len(engine_lines) == 1 and f"TensorRT engine {engines / 'backbone.engine'}" in engine_lines[0]
    bb = session.backbone
    assert bb.engine.description == "tensorrt 10.0.1 [stand-in]" and bb.engine.path == engines / "backbone.engine"
    assert bb.info.sha256 == session.bank.manifest["backbone"]["sha256"]  # the contract is the graph's
    assert bb.engine.metadata[names.META_FORMAT] == names.FEATURE_FORMAT_VERSION
    result = session.inspector.inspect(read_image(list_images([str(demo_category / "test" / "defect")])[0]))
    assert result.anomaly_map.shape == (64, 64)
    serve = doctor_report.collect(engines, bank)["serve"]  # the same decision, printed
    assert (serve["engine"], serve["engine_file"], serve["compute"]) == ("tensorrt", str(engines / "backbone.engine"),
                                                                      "numpy")
    assert "TensorRT engine" in doctor_report.render(doctor_report.collect(engines, bank))


@pytest.fixture
def other_graph(tmp_path, random_backbone) -> Path:
    """A feature graph with other bytes than the bank's (so another sha256)."""
    other = tmp_path / "other.onnx"
    other.write_bytes(random_backbone.read_bytes() + b"\0")
    return other


def test_engines_of_another_backbone_are_not_taken(engines, other_graph):
    choice = decide_serving(other_graph, engines, compute="numpy")
    assert choice.engine.backend in ("onnxruntime", "openvino")  # a CPU engine, not TensorRT
    assert "no engine was built from this backbone" in choice.engine.reason
    with pytest.raises(GpuError, match="no engine was built from this backbone"):
        decide_serving(other_graph, engines, engine="tensorrt")
    assert decide_serving(None, engines).engine.backend == "tensorrt"  # doctor without --bank: folder-level


@pytest.mark.skipif(HAS_GPU, reason="a GPU is present: auto would take it")
def test_predict_takes_the_options(bank, demo_category, tmp_path, caplog):
    from edge_foct.edge_app.cli import main

    empty = tmp_path / "no-engines"
    empty.mkdir()
    with caplog.at_level(logging.INFO, logger="edge_foct"):
        main(["predict", "--bank", str(bank), str(demo_category / "test" / "good"), "--out", str(tmp_path / "out"),
              "--engines", str(empty), "--compute", "numpy", "--threads", "1"])
    lines = [r.getMessage() for r in caplog.records]
    engine = next(m for m in lines if m.startswith("backbone engine:"))
    assert "(TensorRT: " in engine  # the reason it was not taken
    assert any(m.startswith("compute backend: numpy reference (asked for)") for m in lines)
    plans = [m for m in lines if m.startswith("threads: ")]
    assert len(plans) == 1 and "engine 1 intra" in plans[0] and "BLAS 1" in plans[0]  # decided once, logged once
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edge_foct"):
        main(["predict", "--bank", str(bank), str(demo_category / "test" / "good"), "--out", str(tmp_path / "cpu"),
              "--engine", "cpu", "--threads", "1"])
    lines = [r.getMessage() for r in caplog.records]
    assert "backbone engine: onnxruntime [CPUExecutionProvider] (asked for)" in lines
    opened = [m for m in lines if m.startswith("engine ") and "onnxruntime" in m]
    assert opened and all("(1 threads, no spin)" in m for m in opened)  # the plan reached the engine
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 4


def test_warm_up_runs_every_stage_and_learns_nothing(tmp_path, random_backbone, demo_category):
    """Inspector.warm_up (serve calls it before the first frame): the online memory is unchanged."""
    bank_dir = make_bank(random_backbone, demo_category, tmp_path / "bank", method="foct")
    inspector = open_session(bank_dir, compute="numpy").inspector
    before = {k: v.copy() for k, v in inspector.method.episodic_state().items()}
    ms = inspector.warm_up()
    after = inspector.method.episodic_state()
    assert ms > 0 and before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    first = inspector.inspect(read_image(list_images([str(demo_category / "test" / "defect")])[0]))
    assert first.diagnostics["admitted"] >= 0 and np.isfinite(first.score)
