"""OpenVINO engine: the Engine protocol, features against ONNX Runtime f32, and the start-up choice.

Tolerances (features of the same graph and input, ONNX Runtime f32 the reference):
- OpenVINO f32: max |diff| <= 1e-4 * max |ref|. Both run f32 kernels; only the summation order
  differs (measured ~1e-6 relative on WRN-50-2 at 256 px).
- OpenVINO bf16: relative L2 error <= 2e-2 and every patch's cosine similarity >= 0.99. bf16 keeps
  8 bits of mantissa (rounding error 2^-9 ~ 0.2 % per operation, accumulated over the graph's
  layers); measured 0.4 % relative L2 on WRN-50-2 at 256 px, so 2e-2 leaves 5x headroom without
  letting a wrong graph through (a wrong layer gives errors of order 1). What bf16 does to the image
  AUROC is measured, not tested: benchmarks/results/engine_parity/.
"""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest

from edge_foct.runtime import names
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.engines import Engine, OrtEngine
from edge_foct.runtime.engines.choose import choose_engine, open_engine
from edge_foct.runtime.errors import BackboneError, EdgeFoctError
from edge_foct.runtime.threads import plan_threads

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edge-foct[openvino]')")
from edge_foct.runtime.engines.openvino_engine import OpenVinoEngine, cpu_precision  # noqa: E402

X86 = platform.machine().lower() in ("x86_64", "amd64")


def _features(engine, x: np.ndarray) -> np.ndarray:
    return engine.run({names.BACKBONE_INPUT: x})[names.BACKBONE_OUTPUT]


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)  # (N, 3, H, W)


def test_protocol_and_contract(random_backbone):
    engine = OpenVinoEngine(random_backbone, "f32", threads=1)
    ref = OrtEngine(random_backbone)
    assert isinstance(engine, Engine)
    assert [t.name for t in engine.inputs] == [t.name for t in ref.inputs] == [names.BACKBONE_INPUT]
    assert [t.name for t in engine.outputs] == [t.name for t in ref.outputs] == [names.BACKBONE_OUTPUT]
    assert engine.inputs[0].dtype == "float32" and engine.outputs[0].dtype == "float32"
    assert engine.metadata == ref.metadata and engine.metadata[names.META_FORMAT] == names.FEATURE_FORMAT_VERSION
    assert engine.description.startswith("openvino ") and "f32, 1 threads" in engine.description
    bb, bb_ref = Backbone.from_engine(engine, random_backbone), Backbone.load(random_backbone)
    assert bb.info == bb_ref.info  # the same identity (sha256, feature dim) a bank checks
    engine.close()  # OpenVINO's objects released now, not left to interpreter teardown
    with pytest.raises(BackboneError, match="was closed"):
        engine.run({names.BACKBONE_INPUT: np.zeros((1, 3, 64, 64), np.float32)})


def test_outputs_are_owned_by_the_caller(random_backbone, x):
    engine = OpenVinoEngine(random_backbone, "f32")
    first = _features(engine, x[:1])
    kept = first.copy()
    _features(engine, x[1:])  # the request's buffers are overwritten here
    assert np.array_equal(first, kept)
    first[...] = 0  # writing into the result leaves the engine's next result alone
    assert np.array_equal(_features(engine, x[:1]), kept)


def test_copy_false_hands_out_the_request_buffer_until_the_next_run(random_backbone, x):
    engine = OpenVinoEngine(random_backbone, "f32")
    owned = _features(engine, x[:1])
    view = engine.run({names.BACKBONE_INPUT: x[:1]}, copy=False)[names.BACKBONE_OUTPUT]
    np.testing.assert_array_equal(view, owned)  # the same numbers, without the copy
    other = _features(engine, x[1:])  # the next run writes into the buffer the view shows
    np.testing.assert_array_equal(view, other)
    assert not np.array_equal(view, owned)


def test_inspector_scores_equal_with_the_engine_buffer(random_backbone, demo_category):
    """The per-frame path reads the engine's buffer (copy=False); scores and online memory equal those
    of a copy-everything run frame after frame."""
    from edge_foct.runtime.config import Config
    from edge_foct.runtime.fit import fit_bank
    from edge_foct.runtime.image_io import list_images, read_image
    from edge_foct.runtime.pipeline import Inspector

    bb = Backbone.from_engine(OpenVinoEngine(random_backbone, "f32"), random_backbone)
    images = [read_image(p) for p in list_images([str(demo_category / "test" / "defect")])[:4]]
    support = [read_image(p) for p in list_images([str(demo_category / "train" / "good")])[:2]]
    bank = fit_bank(bb, support, Config().replace(method={"name": "foct", "preset": "edge"}))
    pre = bb.preprocessor(*bank.input_size)
    fast = Inspector(bb, pre, bank.make_method(), bank.threshold, online=True)
    ref_method = bank.make_method()
    for rgb in images:
        got = fast.inspect(rgb)
        feats = bb.features(pre(rgb))[0]  # an owned copy
        want = ref_method.score(feats.reshape(-1, feats.shape[-1]), update=True)
        np.testing.assert_allclose(got.patch_scores.ravel(), want.scores, rtol=1e-6)
        assert got.diagnostics["memory_size"] == want.diagnostics["memory_size"]


def test_f32_matches_onnxruntime(random_backbone, x):
    want = _features(OrtEngine(random_backbone), x)
    got = _features(OpenVinoEngine(random_backbone, "f32"), x)  # batch of 2, as fit does
    assert got.shape == want.shape == (2, 8, 8, got.shape[-1])
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    # float64 input is cast to the graph's float32, as ONNX Runtime would refuse it
    assert np.abs(_features(OpenVinoEngine(random_backbone, "f32"), x.astype(np.float64)) - want).max() \
        <= 1e-4 * np.abs(want).max()


def test_bf16_matches_onnxruntime_loosely(random_backbone, x):
    want = _features(OrtEngine(random_backbone), x)  # (N, h, w, D)
    want = want.reshape(-1, want.shape[-1])  # (N*h*w, D)
    got = _features(OpenVinoEngine(random_backbone, "bf16"), x).reshape(want.shape)
    assert np.linalg.norm(got - want) <= 2e-2 * np.linalg.norm(want)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1) + 1e-12)
    assert cos.min() >= 0.99


def test_bad_input_is_one_clear_error(random_backbone, tmp_path):
    with pytest.raises(BackboneError, match="not found"):
        OpenVinoEngine(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph")
    with pytest.raises(BackboneError, match="junk.onnx"):
        OpenVinoEngine(junk)
    with pytest.raises(BackboneError, match="'int4'"):
        OpenVinoEngine(random_backbone, "int4")
    with pytest.raises(BackboneError, match="missing input"):
        OpenVinoEngine(random_backbone, "f32").run({})


def test_one_core_per_process(random_backbone, x, monkeypatch):
    """Engines, the engine choice and the precision probe share the process's one ov.Core
    (openvino_engine.shared_core): none makes another, and an engine runs on after another engine on
    the same Core is closed."""
    from edge_foct.runtime.engines import openvino_engine

    core = openvino_engine.shared_core()
    made, real = [], ov.Core
    monkeypatch.setattr(ov, "Core", lambda *a: made.append(1) or real(*a))
    first = OpenVinoEngine(random_backbone, "f32", threads=1)
    second = open_engine(choose_engine(prefer="openvino:f32", graph=random_backbone), random_backbone, plan_threads(1))
    cpu_precision()
    assert made == [] and openvino_engine.shared_core() is core
    ref = _features(first, x)
    first.close()
    out = _features(second, x)
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
    second.close()


@pytest.mark.skipif(not X86, reason="OpenVINO is taken automatically on x86 CPUs only")
def test_auto_keeps_a_backbone_that_loses_accuracy_in_bf16_on_f32(random_backbone, monkeypatch):
    """A backbone listed in BF16_LOSES_ACCURACY runs on ONNX Runtime f32 under auto where OpenVINO
    would take bf16, with the measurement in the reason; asking for OpenVINO still gets it."""
    from edge_foct.runtime.cuda import probe
    from edge_foct.runtime.engines import choose

    monkeypatch.setattr(probe, "cuda_devices", lambda: ([], "no GPU (test)"))
    backbone_id = Backbone.load(random_backbone).info.backbone_id
    monkeypatch.setitem(choose.BF16_LOSES_ACCURACY, backbone_id, "bf16 moved its AUROC (test)")
    auto = choose_engine(prefer="auto", graph=random_backbone)
    if cpu_precision()[0] == "bf16":
        assert (auto.backend, auto.precision) == ("onnxruntime", "f32")
        assert f"bf16 not taken for {backbone_id}: bf16 moved its AUROC (test)" in auto.reason
    else:  # OpenVINO runs f32 here: nothing to avoid
        assert (auto.backend, auto.precision) == ("openvino", "f32")
    asked = choose_engine(prefer="openvino", graph=random_backbone)
    assert (asked.backend, asked.precision) == ("openvino", cpu_precision()[0])
    monkeypatch.delitem(choose.BF16_LOSES_ACCURACY, backbone_id)
    assert choose_engine(prefer="auto", graph=random_backbone).backend == "openvino"


def test_precision_follows_the_cpu():
    precision, why = cpu_precision()
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert precision == ("bf16" if "BF16" in caps else "f32") and "capabilities" in why


@pytest.mark.skipif(not X86, reason="OpenVINO is taken automatically on x86 CPUs only")
def test_auto_takes_openvino_on_x86_and_open_engine_uses_the_plan(random_backbone, monkeypatch):
    from edge_foct.runtime.cuda import probe

    monkeypatch.setattr(probe, "cuda_devices", lambda: ([], "no GPU (test)"))  # the CPU branch, on any host
    choice = choose_engine()
    assert choice.backend == "openvino" and choice.precision == cpu_precision()[0]
    assert "OpenVINO on the CPU" in choice.reason and choice.describe().startswith("openvino [CPU, ")
    engine = open_engine(choice, random_backbone, plan_threads(1))
    assert isinstance(engine, OpenVinoEngine) and engine.threads == 1 and engine.precision == choice.precision
    forced = choose_engine(prefer="openvino:f32")
    assert (forced.backend, forced.precision, forced.reason.endswith("asked for")) == ("openvino", "f32", True)
    cpu = choose_engine(prefer="cpu")
    assert (cpu.backend, cpu.precision) == ("onnxruntime", "f32")
    ort_engine = open_engine(cpu, random_backbone, plan_threads(1))
    assert isinstance(ort_engine, OrtEngine) and ort_engine.threads == 1 and "no spin" in ort_engine.description


def test_choice_without_openvino_or_off_x86(monkeypatch):
    from edge_foct.runtime.cuda import probe

    monkeypatch.setattr(probe, "cuda_devices", lambda: ([], "no GPU (test)"))
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    choice = choose_engine()
    assert choice.backend == "onnxruntime" and "OpenVINO: not installed" in choice.reason
    with pytest.raises(BackboneError, match="OpenVINO asked for, but not installed"):
        choose_engine(prefer="openvino")
    monkeypatch.delitem(sys.modules, "openvino")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    choice = choose_engine()
    assert choice.backend == "onnxruntime" and "aarch64 is not an x86 CPU" in choice.reason
    for bad in ("openvino:int8", "cpu:f32", "openvino:"):
        with pytest.raises(EdgeFoctError, match="is not one of"):
            choose_engine(prefer=bad)


@pytest.mark.skipif(not X86, reason="OpenVINO is taken automatically on x86 CPUs only")
def test_a_graph_openvino_cannot_read_stays_on_onnxruntime(mobilenet_features, random_backbone, monkeypatch):
    """The shared MobileNetV2 int8 graph is operator-oriented (QLinearConv), which OpenVINO's ONNX
    reader does not convert: auto keeps it on ONNX Runtime and says why; asking for OpenVINO fails
    with that reason in one line."""
    from edge_foct.runtime.cuda import probe

    monkeypatch.setattr(probe, "cuda_devices", lambda: ([], "no GPU (test)"))
    choice = choose_engine(graph=mobilenet_features)
    assert choice.backend == "onnxruntime" and "OpenVINO: OpenVINO cannot read" in choice.reason
    assert "QLinearConv" in choice.reason
    with pytest.raises(BackboneError, match="QLinearConv"):
        choose_engine(prefer="openvino", graph=mobilenet_features)
    with pytest.raises(BackboneError, match="use --engine cpu"):
        OpenVinoEngine(mobilenet_features)
    assert choose_engine(graph=random_backbone).backend == "openvino"  # a float graph is read
