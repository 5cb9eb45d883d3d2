"""The shared export helpers: the parity check bites, graphs get checked and recorded with sha256."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the export extra: pip install -e \".[export]\")")
nn = torch.nn

from edge_foct.export.manifest import (MANIFEST, EXPORTER, ExportError, check_parity, export_torch,
                                       record_graph, set_graph_metadata)
from edge_foct.runtime.backbone import file_sha256


class Affine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(x))


@pytest.fixture(scope="module")
def affine_graph(tmp_path_factory):
    module = Affine().eval()
    path = export_torch(module, (torch.zeros(2, 8),), tmp_path_factory.mktemp("g") / "affine.onnx", ["x"], ["y"],
                        {"x": {0: "rows"}, "y": {0: "rows"}}, 17,
                        lambda m: set_graph_metadata(m, {"edge_foct.graph": "affine"}))
    return module, path


def test_export_writes_checked_graph_with_metadata(affine_graph):
    _, path = affine_graph
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert {p.key: p.value for p in model.metadata_props} == {"edge_foct.graph": "affine"}
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["y"]
    assert model.opset_import[0].version == 17
    assert not list(path.parent.glob(".affine.onnx*")), "the temporary export folder must be removed"


def test_parity_passes_on_the_same_function_and_reports_the_error(affine_graph, rng):
    module, path = affine_graph
    feeds = {"x": rng.standard_normal((5, 8)).astype(np.float32)}
    (report,) = check_parity(module, path, feeds, rtol=1e-5, atol=1e-6)
    assert report.ok and report.shape == (5, 3) and report.output == "y"
    assert report.max_abs_err <= 1e-6 + 1e-5 * report.max_abs_ref
    assert 0.0 < report.max_abs_ref <= 1.0  # tanh


def test_parity_fails_loudly_on_a_different_function(affine_graph, rng):
    module, path = affine_graph
    feeds = {"x": rng.standard_normal((5, 8)).astype(np.float32)}
    with pytest.raises(ExportError, match="differs from torch"):
        check_parity(lambda x: module(x) + 1e-3, path, feeds, rtol=1e-5, atol=1e-6)
    with pytest.raises(ExportError, match="shape"):
        check_parity(lambda x: module(x)[:, :2], path, feeds, rtol=1e-5, atol=1e-6)


def test_record_graph_keeps_other_graphs_and_hashes_files(affine_graph, rng):
    module, path = affine_graph
    out = path.parent
    parity = check_parity(module, path, {"x": rng.standard_normal((2, 8)).astype(np.float32)}, 1e-5, 1e-6)
    extra = out / "extra.npz"
    np.savez(extra, a=np.arange(3))
    record_graph(out, "first", path, 17, {"k": 1}, parity)
    entry = record_graph(out, "second", path, 17, {"k": 2}, parity, extra_files=(extra,))
    data = json.loads((out / MANIFEST).read_text())
    assert set(data["graphs"]) == {"first", "second"} and data["format"] == 1
    assert entry["sha256"] == {"affine.onnx": file_sha256(path), "extra.npz": file_sha256(extra)}
    assert entry["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["rows", 8]}]
    assert entry["exporter"] == EXPORTER and entry["opset"] == 17 and entry["parity"][0]["ok"] is True
    assert {"torch", "onnx", "onnxruntime", "edge_foct"} <= set(entry["versions"])
