"""Graph surgery on the shared ImageNet models: dynamic sizes, and features equal to the taps
aggregated by the NumPy reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge_foct.export.tap_backbone import tap_backbone
from edge_foct.runtime.aggregate import aggregate
from edge_foct.runtime.backbone import Backbone

from ..conftest import MOBILENET, SHUFFLENET, need

CASES = [(MOBILENET, "wide", ("528_quantized", "591_quantized"), 768),
         (MOBILENET, "narrow", ("365_quantized", "426_quantized"), 128),
         (SHUFFLENET, "wide", ("409_QuantizeInput", "540_QuantizeInput"), 348)]


@pytest.mark.parametrize("src,taps,names,dim", CASES, ids=["mnv2-wide", "mnv2-narrow", "shufflenet"])
def test_tapped_backbone(tmp_path, src, taps, names, dim, rng):
    need(src)
    out = tap_backbone(src, tmp_path / "f.onnx", taps=taps)
    bb = Backbone.load(out)
    assert bb.info.feature_dim == dim and bb.info.pretrained
    for size in (224, 256, 336):
        f = bb.features(rng.standard_normal((1, 3, size, size)).astype(np.float32))
        assert f.shape == (1, size // 8, size // 8, dim)
    # reference: the original graph's taps at 224 (its native size), aggregated in NumPy
    model = onnx.load(str(src))
    producers = {o: n for n in model.graph.node for o in n.output}
    for t in names:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    raw = sess.run(list(names), {model.graph.input[0].name: x})
    floats = []
    for t, r in zip(names, raw):
        node = producers[t]
        if r.dtype == np.uint8:  # dequantize with the producer's output scale and zero point
            inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
            r = (r.astype(np.float32) - inits[node.input[7]]) * inits[node.input[6]]
        floats.append(r)
    np.testing.assert_allclose(bb.features(x), aggregate(*floats, None, None), rtol=1e-4, atol=1e-4)


def test_unknown_model_needs_tap_names(tmp_path, random_backbone):
    from edge_foct.runtime.errors import BackboneError

    with pytest.raises(BackboneError, match="--tap8"):
        tap_backbone(random_backbone, tmp_path / "x.onnx")
