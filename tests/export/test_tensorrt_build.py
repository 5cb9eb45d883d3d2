"""TensorRT build plans, the engine manifest check, and the builder's calls.

Here (no TensorRT, no GPU) the builder runs against a recording stand-in of the ``tensorrt``
module, so the sequence of calls, the profiles and the manifest are checked; the real build is the
``tensorrt``-marked test at the end, which skips with the reason on machines without TensorRT + GPU.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import types

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge_foct.export import tensorrt_build as tb
from edge_foct.runtime import names
from edge_foct.runtime.engine_manifest import (EngineManifestError, check_engine_manifest, engine_path,
                                               read_engine_manifest, this_machine)
from edge_foct.runtime.errors import EdgeFoctError

from .fake_tensorrt import fake_tensorrt

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, random_backbone):
    """A feature graph (dynamic batch/height/width), the navigator (dynamic pairs), a static graph."""
    pytest.importorskip("torch", reason="the navigator graph is exported with torch (the export extra)")
    from edge_foct.export.navigator import NavigatorConfig, export_navigator

    d = tmp_path_factory.mktemp("onnx")
    shutil.copy(random_backbone, d / "backbone.onnx")
    export_navigator(d, NavigatorConfig(dim=32, hidden=(16, 8)))
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "static",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), d / "static.onnx")
    return d


@pytest.fixture
def calib_dir(tmp_path, rng):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    return tmp_path


def test_plans_profile_every_dynamic_dim(onnx_dir, tmp_path):
    opts = tb.BuildOptions(fp16=True, sizes=(256, 336), max_batch=2, opt_pairs=100, max_pairs=1000)
    plans = {p.key: p for p in tb.plan_engines(onnx_dir, tmp_path, opts)}
    assert set(plans) == {"backbone", "navigator", "static"}
    assert plans["backbone"].profile == {names.BACKBONE_INPUT: ((1, 3, 256, 256), (1, 3, 336, 336), (2, 3, 336, 336))}
    assert plans["navigator"].profile == {names.NAVIGATOR_INPUT: ((1, 32), (100, 32), (1000, 32))}
    assert plans["static"].profile == {}
    cmd = plans["backbone"].trtexec(tmp_path / "t.cache")
    assert cmd.startswith("trtexec --onnx=") and "--fp16" in cmd and "--int8" not in cmd
    assert "--minShapes=image:1x3x256x256" in cmd and "--maxShapes=image:2x3x336x336" in cmd
    assert "Shapes" not in plans["static"].trtexec(tmp_path / "t.cache")


def test_int8_is_calibrated_for_feature_graphs_only(onnx_dir, tmp_path, calib_dir):
    opts = tb.BuildOptions(int8=True, calib=(calib_dir,))
    plans = {p.key: p for p in tb.plan_engines(onnx_dir, tmp_path, opts)}
    assert plans["backbone"].int8 and not plans["navigator"].int8 and not plans["static"].int8
    assert f"--calib={plans['backbone'].calib_cache}" in plans["backbone"].trtexec(tmp_path / "t.cache")
    batches = tb.calibration_batches((calib_dir,), opts.opt)
    assert len(batches) == 3 and all(b.shape == (1, 3, 336, 336) and b.dtype == np.float32 for b in batches)


def test_options_are_validated():
    with pytest.raises(EdgeFoctError, match="--calib"):
        tb.BuildOptions(int8=True)
    with pytest.raises(EdgeFoctError, match="multiple of 16"):
        tb.BuildOptions(sizes=(250,))
    with pytest.raises(EdgeFoctError, match="no profile rule"):
        tb.dim_range("sequence", tb.BuildOptions())


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_cli_without_tensorrt_prints_trtexec_and_one_error(onnx_dir):
    res = subprocess.run([sys.executable, "-m", "edge_foct.edge_app", "build-engines", "--onnx-dir", str(onnx_dir),
                          "--fp16"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "TensorRT is not installed" in errors[0] and "3 trtexec" in errors[0]
    assert res.stdout.count("trtexec --onnx=") == 3
    assert not (onnx_dir / "tensorrt").exists()
    with pytest.raises(EngineManifestError, match="TensorRT is not installed"):
        this_machine()


# --- the builder against a recording stand-in of the tensorrt module ---------------------------

def test_builder_calls_and_manifest(onnx_dir, tmp_path, calib_dir, monkeypatch):
    log: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(log))
    monkeypatch.setattr(tb, "this_machine", lambda: ("NVIDIA Jetson Orin", "8.7", "10.0.1"))
    seen = []

    def fake_calibrator(trt, batches, cache):
        seen.append((len(batches), cache.name))
        return types.SimpleNamespace(free=lambda: seen.append("freed"))

    monkeypatch.setattr(tb, "make_calibrator", fake_calibrator)
    out = tmp_path / "engines"
    opts = tb.BuildOptions(fp16=True, int8=True, calib=(calib_dir,), sizes=(64, 96), max_batch=2)
    manifest = tb.build_engines(onnx_dir, out, opts, "edge-foct build-engines --onnx-dir X")
    calls = [c[0] for c in log]
    assert calls.count("builder.build_serialized_network") == 3
    shapes = [c[1] for c in log if c[0] == "create_optimization_profile.set_shape"]
    assert (names.BACKBONE_INPUT, (1, 3, 64, 64), (1, 3, 96, 96), (2, 3, 96, 96)) in shapes
    assert calls.count("create_builder_config.set_calibration_profile") == 1  # the backbone only
    assert sum(1 for c in log if c[0] == "create_builder_config.set_flag" and c[1] == ("INT8",)) == 1
    assert sum(1 for c in log if c[0] == "create_builder_config.set_flag" and c[1] == ("FP16",)) == 3
    assert seen == [(3, "backbone.int8-calibration.cache"), "freed"]
    assert (out / tb.TIMING_CACHE).read_bytes() == b"CACHE"
    assert manifest == read_engine_manifest(out)
    assert manifest["engines"]["backbone"]["precision"] == "int8"
    assert manifest["engines"]["navigator"]["precision"] == "fp16"
    assert manifest["engines"]["backbone"]["profile"]["image"]["max"] == [2, 3, 96, 96]
    check_engine_manifest(manifest, "NVIDIA Jetson Orin", "8.7", "10.0.1")
    assert engine_path(out, manifest, "static").read_bytes() == b"ENGINE"


# --- the engine manifest check (torch-free runtime side), with fake machine values -------------

MANIFEST = {"format": 1, "tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
            "precision": "fp16", "rebuild_command": "edge-foct build-engines --onnx-dir onnx --fp16", "engines": {}}


def test_manifest_check_accepts_the_building_machine():
    check_engine_manifest(MANIFEST, "Orin", "8.7", "10.3.0")


@pytest.mark.parametrize("machine,named", [(("RTX 4090", "8.9", "10.3.0"), "GPU 'Orin'"),
                                           (("Orin", "8.6", "10.3.0"), "compute capability '8.7'"),
                                           (("Orin", "8.7", "10.4.0"), "TensorRT '10.3.0'")])
def test_manifest_check_refuses_another_machine_with_the_rebuild_command(machine, named):
    with pytest.raises(EngineManifestError) as err:
        check_engine_manifest(MANIFEST, *machine)
    msg = str(err.value)
    assert named in msg and "`edge-foct build-engines --onnx-dir onnx --fp16`" in msg and "\n" not in msg


def test_manifest_reading_and_engine_files(tmp_path):
    with pytest.raises(EngineManifestError, match="build-engines"):
        read_engine_manifest(tmp_path)
    (tmp_path / "engine_manifest.json").write_text('{"format": 99}')
    with pytest.raises(EngineManifestError, match="format 99"):
        read_engine_manifest(tmp_path)
    (tmp_path / "b.engine").write_bytes(b"xyz")
    manifest = {**MANIFEST, "engines": {"b": {"engine": "b.engine", "sha256": "0" * 64}}}
    with pytest.raises(EngineManifestError, match="not the engine the manifest recorded"):
        engine_path(tmp_path, manifest, "b")
    with pytest.raises(EngineManifestError, match="no engine 'c'"):
        engine_path(tmp_path, manifest, "c")


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed: the real build runs on a Jetson / RTX box")
def test_real_build_on_this_gpu(onnx_dir, tmp_path):
    try:
        machine = this_machine()
    except EngineManifestError as e:
        pytest.skip(f"TensorRT present but no usable GPU: {e}")
    opts = tb.BuildOptions(fp16=True, sizes=(64, 96), max_batch=2, opt_pairs=64, max_pairs=256)
    manifest = tb.build_engines(onnx_dir, tmp_path, opts, "edge-foct build-engines --onnx-dir X --fp16")
    check_engine_manifest(manifest, *machine)
    assert set(manifest["engines"]) == {"backbone", "navigator", "static"}
    assert (tmp_path / tb.TIMING_CACHE).stat().st_size > 0


def test_build_side_needs_no_torch():
    """build-engines runs on a device without the export extra: planning and building import no torch."""
    code = ("import sys, edge_foct.export.tensorrt_build, edge_foct.edge_app.commands.build_engines\n"
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_manifest_carries_each_graphs_metadata(onnx_dir, tmp_path, monkeypatch):
    """A serialized engine keeps no ONNX metadata: TrtEngine.metadata comes from the manifest, which must
    hold exactly what ONNX Runtime reads from the source graph (the backbone contract)."""
    from edge_foct.runtime.engines import OrtEngine

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt([]))
    monkeypatch.setattr(tb, "this_machine", lambda: ("NVIDIA Jetson Orin", "8.7", "10.0.1"))
    manifest = tb.build_engines(onnx_dir, tmp_path, tb.BuildOptions(sizes=(64,)), "edge-foct build-engines")
    for key, entry in manifest["engines"].items():
        assert entry["metadata"] == OrtEngine(onnx_dir / entry["onnx"]).metadata, key
    assert manifest["engines"]["backbone"]["metadata"][names.META_FORMAT] == names.FEATURE_FORMAT_VERSION
    assert read_engine_manifest(tmp_path) == manifest
