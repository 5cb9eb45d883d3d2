"""export/dequantize.py: int8 graphs (QOperator and QDQ) rewritten as float graphs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_foct.export.dequantize import dequantize, is_quantized
from edge_foct.export.tap_backbone import tap_backbone

from ..conftest import MOBILENET, SHUFFLENET, need


def _float_model(path):
    """image (1, 3, 16, 16) -> Conv 3x3 + Relu -> Conv 1x1 (per-channel weights) -> out."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((4, 8, 1, 1)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(8).astype(np.float32) * 0.1
    g = helper.make_graph(
        [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c1"], ["r1"]),
         helper.make_node("Conv", ["r1", "w2"], ["out"])],
        "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 16, 16])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("fmt", ["QOperator", "QDQ"])
def test_quantized_tiny_model_becomes_float_and_close(tmp_path, fmt):
    quant = pytest.importorskip("onnxruntime.quantization")
    src = _float_model(tmp_path / "f.onnx")
    rng = np.random.default_rng(1)
    calib = [{"image": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]

    class Reader(quant.CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    q = tmp_path / "q.onnx"
    quant.quantize_static(str(src), str(q), Reader(), quant_format=getattr(quant.QuantFormat, fmt),
                          per_channel=True, weight_type=quant.QuantType.QInt8)
    qm = onnx.load(str(q))
    assert is_quantized(qm)
    fm = dequantize(qm)
    assert not is_quantized(fm)
    assert not any(i.data_type in (TensorProto.INT8, TensorProto.UINT8) for i in fm.graph.initializer)
    onnx.checker.check_model(fm)
    x = calib[0]["image"]
    ref = ort.InferenceSession(str(src)).run(None, {"image": x})[0]
    got = ort.InferenceSession(fm.SerializeToString()).run(None, {"image": x})[0]
    qout = ort.InferenceSession(str(q)).run(None, {"image": x})[0]
    # the float rewrite is at least as close to the float original as the int8 graph is
    err = np.abs(got - ref).mean() / np.abs(ref).mean()
    assert err < 0.05 and err <= np.abs(qout - ref).mean() / np.abs(ref).mean() + 1e-6


@pytest.mark.parametrize("src", [MOBILENET, SHUFFLENET], ids=["mobilenetv2-int8", "shufflenet-qdq"])
def test_shared_backbones_float_features_match_int8(tmp_path, src):
    need(src)
    a = tap_backbone(src, tmp_path / "int8.onnx")
    b = tap_backbone(src, tmp_path / "float.onnx", float_graph=True)
    mb = onnx.load(str(b))
    assert not is_quantized(mb)
    assert {p.key: p.value for p in mb.metadata_props}["edge_foct.kernels"] == "float32"
    x = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32) * 0.5
    ya = ort.InferenceSession(str(a)).run(None, {"image": x})[0]
    yb = ort.InferenceSession(str(b)).run(None, {"image": x})[0]
    cos = (ya * yb).sum(-1) / (np.linalg.norm(ya, axis=-1) * np.linalg.norm(yb, axis=-1) + 1e-12)
    assert ya.shape == yb.shape and np.median(cos) > 0.995
