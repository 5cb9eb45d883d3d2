"""WideResNet-50-2 feature graph: the in-graph aggregation equals runtime.aggregate, ONNX Runtime
matches torch at 64, 96 (non-square, batch 2), 256 and 336, and the runtime's Backbone reads it.

One random-weight export is shared by the module (about 10 s on 2 cores); the full-size
shapes 256 and 336 are checked here too since a run at those sizes takes a few seconds."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the export extra: pip install -e \".[export]\")")

from edge_foct.export.manifest import ExportError, check_parity
from edge_foct.export.wrn import (FEATURE_DIM, aggregate_wrn, build_wide_resnet50, export_module,
                                  export_wide_resnet50)
from edge_foct.runtime import names
from edge_foct.runtime.aggregate import aggregate
from edge_foct.runtime.backbone import Backbone

RTOL, ATOL = 1e-4, 1e-4  # measured max |err| 4e-5 on features of magnitude up to 49


@pytest.fixture(scope="module")
def wrn(tmp_path_factory):
    module, backbone_id, pretrained = build_wide_resnet50(None, random_weights=True)
    path = export_module(module, tmp_path_factory.mktemp("wrn") / "wrn.onnx", backbone_id, pretrained)
    return module, path


def test_channel_pooling_shortcut_equals_the_reference_aggregation(rng):
    l2 = rng.standard_normal((2, 512, 6, 10)).astype(np.float32)
    l3 = rng.standard_normal((2, 1024, 3, 5)).astype(np.float32)
    ours = aggregate_wrn(torch.from_numpy(l2), torch.from_numpy(l3)).numpy()
    ref = aggregate(l2, l3, layer_dim=1024, out_dim=1024)  # the (1536, 1024) pooling matrix
    assert ours.shape == ref.shape == (2, 6, 10, FEATURE_DIM)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_module_equals_reference_on_its_own_taps(wrn, rng):
    module, _ = wrn
    x = torch.from_numpy(rng.standard_normal((1, 3, 64, 96)).astype(np.float32))
    with torch.no_grad():
        l2, l3 = module.taps(x)
        feats = module(x).numpy()
    assert l2.shape == (1, 512, 8, 12) and l3.shape == (1, 1024, 4, 6)
    np.testing.assert_allclose(feats, aggregate(l2.numpy(), l3.numpy(), 1024, 1024), rtol=1e-5, atol=1e-5)


def test_graph_contract_and_metadata(wrn):
    _, path = wrn
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta[names.META_PRETRAINED] == "false" and meta[names.META_FEATURE_DIM] == "1024"
    assert meta[names.META_BACKBONE_ID] == "wide_resnet50_2-random-seed0:layer2+layer3"
    dims = lambda t: [d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(model.graph.input[0]) == ["batch", 3, "height", "width"]
    assert dims(model.graph.output[0]) == ["batch", "h", "w", 1024]
    assert not any(n.op_type == "MatMul" for n in model.graph.node), "channel pooling must not be a dense MatMul"


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 64, 96), (1, 3, 256, 256), (1, 3, 336, 336)],
                         ids=["64", "64x96-batch2", "256", "336"])
def test_onnx_runtime_matches_torch_at_dynamic_sizes(wrn, rng, shape):
    module, path = wrn
    (report,) = check_parity(module, path, {names.BACKBONE_INPUT: rng.standard_normal(shape).astype(np.float32)},
                             rtol=RTOL, atol=ATOL)
    n, _, h, w = shape
    assert report.ok and report.shape == (n, h // 8, w // 8, FEATURE_DIM)
    assert report.max_abs_ref > 1.0  # random WRN features are not trivially small


def test_runtime_backbone_gives_the_torch_patch_features(wrn, rng):
    module, path = wrn
    bb = Backbone.load(path)
    assert bb.info.feature_dim == FEATURE_DIM and not bb.info.pretrained
    x = rng.standard_normal((1, 3, 96, 96)).astype(np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(bb.features(x), ref, rtol=RTOL, atol=ATOL)


def test_state_dict_weights_are_exported_as_pretrained(wrn, tmp_path, rng):
    module, path = wrn
    # torchvision key names (layer4 and fc may be absent: the graph stops at layer3)
    rename = {"stem.0.": "conv1.", "stem.1.": "bn1.", "stem.4.": "layer1."}
    state = {}
    for k, v in module.state_dict().items():
        for old, new in rename.items():
            k = k.replace(old, new) if k.startswith(old) else k
        state[k] = v
    torch.save(state, tmp_path / "wrn.pth")
    out = export_wide_resnet50(tmp_path / "from_state.onnx", weights=tmp_path / "wrn.pth")
    bb = Backbone.load(out)
    assert bb.info.pretrained and bb.info.backbone_id.startswith("wide_resnet50_2-")
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(bb.features(x), Backbone.load(path).features(x), rtol=1e-5, atol=1e-5)


def test_weights_errors_say_how_to_provide_them(tmp_path):
    with pytest.raises(ExportError, match="--weights PATH.*--random-weights"):
        export_wide_resnet50(tmp_path / "x.onnx")
    with pytest.raises(ExportError, match="file not found"):
        export_wide_resnet50(tmp_path / "x.onnx", weights=tmp_path / "missing.pth")
    torch.save({"not_a_resnet.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ExportError, match="not a wide_resnet50_2 state dict"):
        export_wide_resnet50(tmp_path / "x.onnx", weights=tmp_path / "bad.pth")
    assert not (tmp_path / "x.onnx").exists()
