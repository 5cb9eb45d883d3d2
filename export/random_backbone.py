"""A randomly initialised CNN with stride-8 and stride-16 taps, built with onnx.helper (no torch).

The last fallback of backbone resolution on a machine that can download nothing: it makes the
whole pipeline run, and every result made with it carries a warning (manifest ``pretrained``
is false). Four 3x3 conv + ReLU stages, He-initialised from a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_foct.runtime import names

from .aggregation import append_aggregation, set_metadata

WIDTHS = (32, 64, 128, 256)  # stage outputs at strides 2, 4, 8, 16
OPSET = 17


def build_random_backbone(dst: str | Path, seed: int = 0) -> Path:
    """Write the random feature ONNX to ``dst``; D = WIDTHS[2] + WIDTHS[3] = 384."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev, c_in = [], [], names.BACKBONE_INPUT, 3
    for k, c_out in enumerate(WIDTHS):
        w = (rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2.0 / (9 * c_in))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{k}"), numpy_helper.from_array(np.zeros(c_out, np.float32), f"b{k}")]
        nodes += [helper.make_node("Conv", [prev, f"w{k}", f"b{k}"], [f"c{k}"], kernel_shape=[3, 3],
                                   strides=[2, 2], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"])]
        prev, c_in = f"r{k}", c_out
    graph = helper.make_graph(
        nodes, "random_backbone",
        [helper.make_tensor_value_info(names.BACKBONE_INPUT, TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [], inits)
    dim = append_aggregation(graph, "r2", "r3", WIDTHS[2], WIDTHS[3], None, None)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    set_metadata(model, f"random-cnn-seed{seed}", dim, pretrained=False)
    onnx.checker.check_model(model)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst
