"""Turn a classification ONNX into an edge-foct feature ONNX by graph surgery (no torch).

1. rename the image input to ``image`` and make batch, height and width dynamic;
2. expose the stride-8 and stride-16 taps as float (dequantize QLinear* outputs, or read the
   float input of a QuantizeLinear);
3. prune to what the taps need; rewrite constant Reshape shapes (channel shuffles) to follow
   the input's batch and spatial dims;
4. append the PatchCore aggregation and the metadata.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_foct.runtime import names
from edge_foct.runtime.errors import BackboneError

from .aggregation import append_aggregation, set_metadata
from .dequantize import dequantize, is_quantized
from .onnx_io import load_onnx

#: known taps of the shared ImageNet models (../shared/weights/MANIFEST.md), by file sha256
KNOWN_TAPS = {
    "cc028fe6cae7bc11a4ff53cfc9b79c920e8be65ce33a904ec3e2a8f66d77f95f":
        ("mobilenetv2-12-int8", {"wide": ("528_quantized", "591_quantized"),
                                 "narrow": ("365_quantized", "426_quantized")}),
    "7c536d02e2f6af9569e5f3c7a4d8282060072119524c93c8da71e63876b4722b":
        ("shufflenet-v2-12-qdq", {"wide": ("409_QuantizeInput", "540_QuantizeInput"),
                                  "narrow": ("409_QuantizeInput", "540_QuantizeInput")}),
}


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def _float_tap(graph: onnx.GraphProto, tap: str) -> str:
    """Name of a float32 tensor equal to ``tap`` (adds a DequantizeLinear for quantized taps)."""
    node = _producers(graph).get(tap)
    if node is None:
        raise BackboneError(f"tap {tap!r} is not produced by any node of the graph")
    if node.op_type in ("QLinearConv", "QLinearAdd", "QLinearMul", "QLinearAveragePool"):
        out = f"{tap}/float"
        graph.node.append(helper.make_node("DequantizeLinear", [tap, node.input[6], node.input[7]], [out]))
        return out
    if node.op_type == "QuantizeLinear":
        return node.input[0]
    return tap


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for n in graph.node:
        n.input[:] = [new if i == old else i for i in n.input]
    graph.input[0].name = new
    dims = graph.input[0].type.tensor_type.shape.dim
    for d, label in zip(dims, ("batch", None, "height", "width")):
        if label:
            d.ClearField("dim_value")
            d.dim_param = label


def _dynamic_reshapes(graph: onnx.GraphProto) -> None:
    """Constant Reshape shapes of rank >= 4 become [N of input, middle consts..., H, W of input]."""
    inits = {i.name: i for i in graph.initializer}
    extra = []
    for k, n in enumerate(graph.node):
        if n.op_type != "Reshape" or n.input[1] not in inits:
            continue
        shape = numpy_helper.to_array(inits[n.input[1]])
        if shape.ndim != 1 or shape.size < 4:
            continue
        p = f"dynshape{k}/"
        mid = numpy_helper.from_array(shape[1:-2].astype(np.int64), p + "mid")
        idx = [numpy_helper.from_array(np.array([v], np.int64), p + f"c{v}") for v in (0, 1, -2)]
        big = numpy_helper.from_array(np.array([1 << 30], np.int64), p + "end")
        graph.initializer.extend([mid, big, *idx])
        extra += [
            helper.make_node("Shape", [n.input[0]], [p + "s"]),
            helper.make_node("Slice", [p + "s", p + "c0", p + "c1"], [p + "n"]),
            helper.make_node("Slice", [p + "s", p + "c-2", p + "end"], [p + "hw"]),
            helper.make_node("Concat", [p + "n", p + "mid", p + "hw"], [p + "shape"], axis=0),
        ]
        n.input[1] = p + "shape"
    # shape nodes must precede their Reshape: prepend them (they only read graph tensors)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(extra + nodes)


def _channels(model: onnx.ModelProto, size: int = 224) -> list[int]:
    """Channel counts of the graph outputs, by one ONNX Runtime run (contrib ops defeat
    onnx shape inference); ``size`` must be the size the source graph was made for."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {names.BACKBONE_INPUT: np.zeros((1, 3, size, size), np.float32)})
    return [int(o.shape[1]) for o in outs]


def _toposort(graph: onnx.GraphProto) -> None:
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise BackboneError("graph has a cycle or a missing tensor after surgery")
        for n in ready:
            ordered.append(n)
            known.update(n.output)
        pending = [n for n in pending if not any(n is r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def tap_backbone(src: str | Path, dst: str | Path, tap8: str | None = None, tap16: str | None = None,
                 taps: str = "wide", layer_dim: int | None = None, out_dim: int | None = None,
                 pretrained: bool = True, backbone_id: str | None = None, float_graph: bool = False) -> Path:
    """Write a feature ONNX at ``dst`` from the classification ONNX ``src``.

    float_graph: rewrite a quantized source as a float graph first (export/dequantize.py), so
    the features do not depend on the CPU's integer kernels.

    tap8 / tap16: tensor names; default: the ``taps`` preset of a known shared model.
    layer_dim / out_dim: PatchCore channel pooling (None keeps the taps' widths, concatenated).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise BackboneError(f"{src}: backbone file not found")
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    known_id, known = KNOWN_TAPS.get(sha, (src.stem, {}))
    if tap8 is None or tap16 is None:
        if taps not in known:
            raise BackboneError(f"{src}: unknown model; name its stride-8 and stride-16 tensors (--tap8, --tap16)")
        tap8, tap16 = known[taps]
    model = load_onnx(src)
    quantized = is_quantized(model)
    if float_graph and quantized:
        model = dequantize(model)
    graph = model.graph
    _rename_input(graph, graph.input[0].name, names.BACKBONE_INPUT)
    f8, f16 = _float_tap(graph, tap8), _float_tap(graph, tap16)
    for t in (f8, f16):
        graph.output.append(helper.make_empty_tensor_value_info(t))
    model = onnx.utils.Extractor(model).extract_model([names.BACKBONE_INPUT], [f8, f16])
    c8, c16 = _channels(model)
    _dynamic_reshapes(model.graph)
    dim = append_aggregation(model.graph, f8, f16, c8, c16, layer_dim, out_dim)
    _toposort(model.graph)
    bid = backbone_id or f"{known_id}:{tap8.split('_')[0]}+{tap16.split('_')[0]}{':float' if float_graph else ''}"
    kernels = "float32" if float_graph or not quantized else "int8 (ONNX Runtime integer kernels: CPU-dependent)"
    set_metadata(model, bid, dim, pretrained, {names.META_PREFIX + "source_sha256": sha,
                                                names.META_PREFIX + "kernels": kernels})
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst
