"""Navigator MLP: ONNX forward equals torch, and the .npz initial weights (x @ W layout) reproduce it
in NumPy exactly as the runtime's own navigator computes it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the export extra: pip install -e \".[export]\")")

from edge_foct.export.manifest import check_parity
from edge_foct.export.navigator import Navigator, NavigatorConfig, export_navigator
from edge_foct.runtime import names

CFG = NavigatorConfig(dim=64, hidden=(32, 16), seed=3)


def _numpy_forward(w: dict[str, np.ndarray], x: np.ndarray, slope: float) -> np.ndarray:
    """The contract in runtime terms: LeakyReLU(LeakyReLU(x @ W1 + b1) @ W2 + b2) @ W3 + b3."""
    leaky = lambda z: np.where(z > 0, z, slope * z)  # noqa: E731
    return leaky(leaky(x @ w["W1"] + w["b1"]) @ w["W2"] + w["b2"]) @ w["W3"] + w["b3"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_navigator(tmp_path_factory.mktemp("nav"), CFG)


@pytest.mark.parametrize("pairs", [1, 257])
def test_onnx_matches_torch_for_any_number_of_pairs(exported, rng, pairs):
    module, path, _ = exported
    x = rng.random((pairs, CFG.dim), dtype=np.float32) * 4.0
    (report,) = check_parity(module, path, {names.NAVIGATOR_INPUT: x}, rtol=1e-5, atol=1e-6)
    assert report.ok and report.shape == (pairs, 1)


def test_graph_contract_and_metadata(exported):
    _, path, _ = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    dims = lambda t: [d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim]  # noqa: E731
    assert [i.name for i in model.graph.input] == [names.NAVIGATOR_INPUT]
    assert [o.name for o in model.graph.output] == [names.NAVIGATOR_OUTPUT]
    assert dims(model.graph.input[0]) == ["pairs", 64] and dims(model.graph.output[0]) == ["pairs", 1]
    meta = {p.key: p.value for p in model.metadata_props}
    assert float(meta[names.META_PREFIX + "leaky_relu_negative_slope"]) == 0.01
    assert meta[names.META_PREFIX + "navigator_hidden"] == "32,16"


def test_npz_layout_and_numpy_forward(exported, rng):
    module, path, npz = exported
    w = dict(np.load(npz))
    assert {k: v.shape for k, v in w.items()} == {"W1": (64, 32), "b1": (32,), "W2": (32, 16), "b2": (16,),
                                                  "W3": (16, 1), "b3": (1,)}
    assert all(v.dtype == np.float32 for v in w.values())
    np.testing.assert_array_equal(w["W1"], module.mlp[0].weight.detach().numpy().T)
    x = rng.random((50, CFG.dim), dtype=np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_numpy_forward(w, x, CFG.negative_slope), ref, rtol=1e-5, atol=1e-6)
    assert (x @ w["W1"] + w["b1"] < 0).any(), "the test must exercise the negative LeakyReLU branch"


def test_initialisation_is_torch_default_and_seeded():
    a, b, c = Navigator(CFG), Navigator(CFG), Navigator(NavigatorConfig(dim=64, hidden=(32, 16), seed=4))
    assert torch.equal(a.mlp[0].weight, b.mlp[0].weight) and not torch.equal(a.mlp[0].weight, c.mlp[0].weight)
    bound = 1.0 / np.sqrt(CFG.dim)  # kaiming-uniform(a=sqrt(5)) of nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    w = a.mlp[0].weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound


def test_authors_sizes_by_default():
    cfg = NavigatorConfig()
    assert (cfg.dim, cfg.hidden, cfg.negative_slope) == (1024, (512, 256), 0.01)
    assert json.loads(json.dumps(cfg.to_json()))["hidden"] == [512, 256]
