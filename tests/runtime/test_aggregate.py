"""The NumPy PatchCore aggregation equals torch's ops, and the ONNX graph equals the NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from edge_foct.runtime.aggregate import adaptive_pool_matrix, aggregate, bilinear_matrix

torch = pytest.importorskip("torch", reason="torch (the export extra) checks the reference maths")
F = torch.nn.functional


@pytest.mark.parametrize("n_in,n_out", [(512, 1024), (1024, 1024), (2048, 1024), (96, 40), (7, 3)])
def test_adaptive_pool_matrix_matches_torch(n_in, n_out, rng):
    x = rng.standard_normal((5, n_in)).astype(np.float32)
    ref = F.adaptive_avg_pool1d(torch.from_numpy(x)[:, None], n_out)[:, 0].numpy()
    np.testing.assert_allclose(x @ adaptive_pool_matrix(n_in, n_out), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_in,n_out", [(4, 8), (21, 42), (16, 32), (5, 9)])
def test_bilinear_matrix_matches_torch(n_in, n_out, rng):
    x = rng.standard_normal((n_in,)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x)[None, None], size=n_out, mode="linear", align_corners=False)
    np.testing.assert_allclose(bilinear_matrix(n_in, n_out) @ x, ref[0, 0].numpy(), rtol=1e-5, atol=1e-6)


def _torch_patchcore(f8, f16, layer_dim, out_dim):
    """Official-PatchCore-style aggregation written with torch ops (3x3 mean variant)."""
    a8 = F.avg_pool2d(torch.from_numpy(f8), 3, 1, 1)
    a16 = F.avg_pool2d(torch.from_numpy(f16), 3, 1, 1)
    a16 = F.interpolate(a16, size=a8.shape[2:], mode="bilinear", align_corners=False)
    n, _, h, w = a8.shape
    rows = [a.permute(0, 2, 3, 1).reshape(n * h * w, -1) for a in (a8, a16)]
    if layer_dim is None:
        out = torch.cat(rows, 1)
    else:
        pooled = torch.stack([F.adaptive_avg_pool1d(r[:, None], layer_dim)[:, 0] for r in rows], 1)
        out = F.adaptive_avg_pool1d(pooled.reshape(n * h * w, 1, -1), out_dim)[:, 0]
    return out.reshape(n, h, w, -1).numpy()


@pytest.mark.parametrize("layer_dim,out_dim", [(None, None), (64, 48), (40, 40)])
@pytest.mark.parametrize("hw", [(8, 8), (6, 10)])
def test_aggregate_matches_torch(layer_dim, out_dim, hw, rng):
    f8 = rng.standard_normal((2, 24, *hw)).astype(np.float32)
    f16 = rng.standard_normal((2, 40, hw[0] // 2, hw[1] // 2)).astype(np.float32)
    got = aggregate(f8, f16, layer_dim, out_dim)
    np.testing.assert_allclose(got, _torch_patchcore(f8, f16, layer_dim, out_dim), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layer_dim,out_dim", [(None, None), (64, 48)])
def test_onnx_aggregation_matches_numpy(tmp_path, layer_dim, out_dim, rng):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edge_foct.export.aggregation import append_aggregation

    g = helper.make_graph([], "agg", [
        helper.make_tensor_value_info("t8", TensorProto.FLOAT, ["n", 24, "h", "w"]),
        helper.make_tensor_value_info("t16", TensorProto.FLOAT, ["n", 40, "h2", "w2"])], [])
    append_aggregation(g, "t8", "t16", 24, 40, layer_dim, out_dim)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for hw in [(8, 8), (12, 6)]:
        f8 = rng.standard_normal((2, 24, *hw)).astype(np.float32)
        f16 = rng.standard_normal((2, 40, hw[0] // 2, hw[1] // 2)).astype(np.float32)
        (got,) = sess.run(None, {"t8": f8, "t16": f16})
        np.testing.assert_allclose(got, aggregate(f8, f16, layer_dim, out_dim), rtol=1e-4, atol=1e-5)
