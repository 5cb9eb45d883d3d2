"""Append the PatchCore aggregation to a graph that exposes two feature taps.

The maths is runtime/aggregate.py's; this writes the same as ONNX nodes so the runtime receives
``patch_features`` (N, h, w, D) straight from the engine. Shape-generic: H and W stay dynamic.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_foct.runtime import names
from edge_foct.runtime.aggregate import channel_matrix


def append_aggregation(graph: onnx.GraphProto, tap8: str, tap16: str, c8: int, c16: int,
                       layer_dim: int | None, out_dim: int | None, prefix: str = "agg/") -> int:
    """Add nodes from float taps (N, c8, h, w), (N, c16, h/2, w/2) to output ``patch_features``.

    Returns the feature dim D. Replaces the graph's outputs with the single feature output.
    """
    p = prefix
    nodes = [
        helper.make_node("AveragePool", [tap8], [p + "a8"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[1, 1], count_include_pad=1),
        helper.make_node("AveragePool", [tap16], [p + "a16"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[1, 1], count_include_pad=1),
        # target size = (N, c16, h, w): batch/channels of a16, spatial dims of a8
        helper.make_node("Shape", [p + "a8"], [p + "s8"]),
        helper.make_node("Shape", [p + "a16"], [p + "s16"]),
        helper.make_node("Slice", [p + "s16", p + "i0", p + "i2"], [p + "nc"]),
        helper.make_node("Slice", [p + "s8", p + "i2", p + "i4"], [p + "hw"]),
        helper.make_node("Concat", [p + "nc", p + "hw"], [p + "size"], axis=0),
        helper.make_node("Resize", [p + "a16", p + "empty", p + "empty", p + "size"], [p + "u16"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Concat", [p + "a8", p + "u16"], [p + "cat"], axis=1),
        helper.make_node("Transpose", [p + "cat"], [p + "nhwc"], perm=[0, 2, 3, 1]),
    ]
    inits = [numpy_helper.from_array(np.array([v], np.int64), p + f"i{v}") for v in (0, 2, 4)]
    # Resize-11 (opset 11/12 graphs) requires roi and scales inputs: pass empty tensors
    inits.append(numpy_helper.from_array(np.zeros(0, np.float32), p + "empty"))
    mat = channel_matrix(c8, c16, layer_dim, out_dim)
    if layer_dim is None:
        nodes.append(helper.make_node("Identity", [p + "nhwc"], [names.BACKBONE_OUTPUT]))
    else:
        inits.append(numpy_helper.from_array(mat, p + "channel_pool"))
        nodes.append(helper.make_node("MatMul", [p + "nhwc", p + "channel_pool"], [names.BACKBONE_OUTPUT]))
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(
        names.BACKBONE_OUTPUT, TensorProto.FLOAT, ["batch", "h", "w", mat.shape[1]]))
    return int(mat.shape[1])


def set_metadata(model: onnx.ModelProto, backbone_id: str, feature_dim: int, pretrained: bool,
                 extra: dict[str, str] | None = None) -> None:
    """Write the feature-contract metadata that runtime.backbone reads."""
    meta = {names.META_BACKBONE_ID: backbone_id, names.META_FEATURE_DIM: str(feature_dim),
            names.META_PRETRAINED: "true" if pretrained else "false",
            names.META_FORMAT: names.FEATURE_FORMAT_VERSION, **(extra or {})}
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
