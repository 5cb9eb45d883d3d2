"""Rewrite a quantized ONNX classifier (QOperator or QDQ format) as a float graph (no torch).

ONNX Runtime's integer kernels give different numbers on CPUs with and without VNNI (u8s8
saturation), so features from an int8 graph depend on the machine. This rewrite keeps the
network's learnt behaviour and drops the integer arithmetic:

- weights and biases: ``(q - zero_point) * scale`` (per tensor or per output channel);
- every quantized activation: the float value clipped to the range its 8-bit type could hold,
  ``[(qmin - zp) * s, (qmax - zp) * s]`` (this keeps fused ReLU / ReLU6, which int8 graphs
  express only through that range), without the rounding;
- ``QLinearConv`` -> ``Conv`` + ``Clip``; ``QLinearAdd`` -> ``Add`` + ``Clip``;
  ``QLinearGlobalAveragePool`` -> ``GlobalAveragePool`` + ``Clip``; ``QLinearMatMul`` -> ``MatMul``
  + ``Clip``; ``QuantizeLinear`` -> ``Clip``; ``DequantizeLinear`` of an activation -> ``Identity``,
  of an initializer -> the float initializer.

Tensor names are kept, so taps named in the quantized graph (``528_quantized``) name the same
(now float) tensors. Float results are the same on every CPU up to float rounding.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_foct.runtime.errors import BackboneError

_QRANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


class _Rewriter:
    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        self.new_inits: dict[str, np.ndarray] = {}
        self.nodes: list[onnx.NodeProto] = []

    def const(self, name: str) -> np.ndarray:
        if name not in self.inits:
            raise BackboneError(f"quantization parameter {name!r} is not a constant: cannot dequantize")
        return self.inits[name]

    def add_init(self, name: str, value: np.ndarray) -> str:
        self.new_inits[name] = value
        return name

    def deq(self, q: str, scale: str, zp: str, axis: int = 0) -> np.ndarray:
        """Float value of the constant ``q``: (q - zp) * scale, broadcasting per-channel along ``axis``."""
        qv, s, z = self.const(q).astype(np.float64), self.const(scale).astype(np.float64), self.const(zp).astype(np.float64)
        if s.ndim == 1 and s.size > 1:
            shape = [1] * qv.ndim
            shape[axis] = -1
            s, z = s.reshape(shape), z.reshape(shape)
        return ((qv - z) * s).astype(np.float32)

    def clip(self, x: str, scale: str, zp: str, out: str) -> None:
        """out = clip(x) to the range that (scale, zp) of zp's 8-bit type can represent."""
        z = self.const(zp)
        qmin, qmax = _QRANGE.get(z.dtype, (None, None))
        if qmin is None:
            raise BackboneError(f"unsupported quantized type {z.dtype} for {out}")
        s, zf = float(self.const(scale).reshape(-1)[0]), float(z.reshape(-1)[0])
        lo = self.add_init(f"{out}/deq_lo", np.array((qmin - zf) * s, np.float32))
        hi = self.add_init(f"{out}/deq_hi", np.array((qmax - zf) * s, np.float32))
        self.nodes.append(helper.make_node("Clip", [x, lo, hi], [out]))

    def rewrite(self, n: onnx.NodeProto) -> None:
        i, o = list(n.input), list(n.output)
        attrs = {a.name: a for a in n.attribute}
        if n.op_type == "QuantizeLinear":
            self.clip(i[0], i[1], i[2], o[0])
        elif n.op_type == "DequantizeLinear":
            if i[0] in self.inits:  # a weight or bias
                axis = helper.get_attribute_value(attrs["axis"]) if "axis" in attrs else 1
                self.add_init(o[0], self.deq(i[0], i[1], i[2], axis))
            else:
                self.nodes.append(helper.make_node("Identity", [i[0]], o))
        elif n.op_type == "QLinearConv":
            w = self.deq(i[3], i[4], i[5], axis=0)  # (C_out, C_in/g, k, k)
            ins = [i[0], self.add_init(f"{o[0]}/deq_w", w)]
            if len(i) > 8 and i[8]:
                ws = self.const(i[4]).astype(np.float64).reshape(-1)
                xs = float(self.const(i[1]).reshape(-1)[0])
                ins.append(self.add_init(f"{o[0]}/deq_b", (self.const(i[8]) * xs * ws).astype(np.float32)))
            self.nodes.append(helper.make_node("Conv", ins, [f"{o[0]}/deq_pre"], name=n.name,
                                               **{k: helper.get_attribute_value(a) for k, a in attrs.items()}))
            self.clip(f"{o[0]}/deq_pre", i[6], i[7], o[0])
        elif n.op_type == "QLinearAdd":
            self.nodes.append(helper.make_node("Add", [i[0], i[3]], [f"{o[0]}/deq_pre"]))
            self.clip(f"{o[0]}/deq_pre", i[6], i[7], o[0])
        elif n.op_type == "QLinearMatMul":
            b = i[3]
            if b in self.inits:
                b = self.add_init(f"{o[0]}/deq_b", self.deq(i[3], i[4], i[5], axis=1))
            self.nodes.append(helper.make_node("MatMul", [i[0], b], [f"{o[0]}/deq_pre"]))
            self.clip(f"{o[0]}/deq_pre", i[6], i[7], o[0])
        elif n.op_type == "QLinearGlobalAveragePool":
            if "channels_last" in attrs and helper.get_attribute_value(attrs["channels_last"]):
                raise BackboneError("QLinearGlobalAveragePool with channels_last: not supported")
            self.nodes.append(helper.make_node("GlobalAveragePool", [i[0]], [f"{o[0]}/deq_pre"]))
            self.clip(f"{o[0]}/deq_pre", i[3], i[4], o[0])
        elif n.op_type.startswith("QLinear") or n.op_type in ("ConvInteger", "MatMulInteger"):
            raise BackboneError(f"cannot dequantize {n.op_type} (node {n.name or o[0]})")
        else:
            self.nodes.append(n)


def dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float copy of the quantized ``model`` (see the module docstring); tensor names kept."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rw = _Rewriter(out.graph)
    for n in out.graph.node:
        rw.rewrite(n)
    used = {x for n in rw.nodes for x in n.input}
    kept = {k: v for k, v in rw.inits.items() if k in used}
    kept.update(rw.new_inits)
    del out.graph.node[:]
    out.graph.node.extend(rw.nodes)
    del out.graph.initializer[:]
    out.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in kept.items())
    del out.graph.value_info[:]  # quantized types recorded there no longer hold
    # the float graph needs no contrib ops; keep only the default domain's opset
    del out.opset_import[:]
    out.opset_import.extend([helper.make_opsetid("", _default_opset(model))])  # Clip takes inputs from 11
    return out


#: ops that run integer kernels (QOperator and QDQ formats, integer convolutions and products)
INTEGER_OPS = ("QuantizeLinear", "DequantizeLinear", "ConvInteger", "MatMulInteger")


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether ``model`` runs integer kernels (and so gives CPU-dependent numbers)."""
    return any(n.op_type.startswith("QLinear") or n.op_type in INTEGER_OPS for n in model.graph.node)


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
