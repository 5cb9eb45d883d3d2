"""The methods' distance GEMM on OpenVINO: NumPy's numbers, and taken only beside an OpenVINO engine.

Tolerances. f32 (the matrix always, the nearest row when asked): both sides are f32 GEMMs that differ
in summation order only, so each distance may differ by a few ulps of the largest term
(|q|^2 + |m|^2): max |diff| <= 1e-5 x that (measured 5e-7 at D = 1024), and the nearest memory row is
the same for every query, also with a large common offset on the features (post-ReLU features:
|q|^2 far above the distances). bf16 nearest row (beside a bf16 engine): 8 bits of mantissa on the
centred inputs, so the image-level score (the largest nearest distance) within 1 % and the median
patch distance within 1 % (measured 1e-4 .. 6e-4), the nearest row the same for >= 97 % of the
patches (measured 98.8-99.5 %), with and without a large common offset (uncentred, the offset case
gave 1.7 % median error and 55 % agreement: this test fails on it).
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_foct.runtime.compute_backend import make_backend, with_engine_distances
from edge_foct.runtime.engines import OrtEngine
from edge_foct.runtime.knn import nearest_sq_dist, sq_dists, sq_norms
from edge_foct.runtime.methods import SupportSet, make_params, method_class

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edge-foct[openvino]')")
from edge_foct.runtime.engines.openvino_distance import OpenVinoDistances  # noqa: E402
from edge_foct.runtime.engines.openvino_engine import OpenVinoEngine, cpu_precision  # noqa: E402
from edge_foct.runtime.engines.openvino_transport import OpenVinoTransport  # noqa: E402


def _pair(rng, n, k, d):
    q = rng.standard_normal((n, d)).astype(np.float32)
    m = (q[rng.choice(n, k)] + 0.3 * rng.standard_normal((k, d))).astype(np.float32)  # near some queries
    return q, m


def test_equals_numpy_for_every_shape_and_dim(rng):
    dist = OpenVinoDistances(threads=2)
    for n, k, d in [(1024, 205, 152), (64, 3, 152), (1024, 187, 1024), (7, 1, 16), (300, 400, 152)]:
        q, m = _pair(rng, n, k, d)
        ref, got = sq_dists(q, m), dist(q, m)
        assert got.shape == (n, k) and got.dtype == np.float32
        assert np.abs(got - ref).max() <= 1e-5 * ref.max()
        np.testing.assert_array_equal(got.argmin(1), ref.argmin(1))
        assert (got >= 0).all()


def test_nearest_equals_numpy(rng):
    dist = OpenVinoDistances(threads=2)
    for n, k, d, offset in [(1024, 205, 152, 0.0), (1024, 187, 1024, 0.0), (5, 1, 16, 0.0), (300, 400, 152, 0.0),
                            (1024, 200, 152, 3.0)]:
        q, m = _pair(rng, n, k, d)
        q, m = q + offset, m + offset
        ref_d, ref_i = nearest_sq_dist(q, m)
        got_d, got_i = dist.nearest(q, m)
        assert got_d.shape == got_i.shape == (n,) and got_d.dtype == np.float32 and got_i.dtype == np.int64
        np.testing.assert_array_equal(got_i, ref_i)
        assert np.abs(got_d - ref_d).max() <= 1e-5 * (sq_norms(q).max() + sq_norms(m).max())
        assert (got_d >= 0).all()
    assert dist.nearest(q[:0], m)[0].shape == (0,)
    with pytest.raises(ValueError, match="no rows"):
        dist.nearest(q, m[:0])


def test_bf16_nearest_keeps_image_scores_and_nearly_every_neighbour(rng):
    if cpu_precision()[0] != "bf16":
        pytest.skip("this CPU has no native bf16: OpenVINO would emulate it (the engine takes f32 here)")
    dist = OpenVinoDistances(threads=2, nearest_precision="bf16")
    for n, k, d, offset in [(1024, 205, 1024, 0.0), (1024, 205, 1024, 3.0), (1024, 200, 152, 3.0)]:
        q, m = _pair(rng, n, k, d)
        q[:20] += 2.0  # a few anomalous patches: the image score is theirs
        q, m = q + offset, m + offset  # a common offset (post-ReLU features): |q|^2 >> the distances
        ref_d, ref_i = nearest_sq_dist(q, m)
        got_d, got_i = dist.nearest(q, m)
        assert abs(got_d.max() - ref_d.max()) <= 1e-2 * ref_d.max()
        assert np.median(np.abs(got_d - ref_d) / ref_d) <= 1e-2
        assert (got_i == ref_i).mean() >= 0.97
    with pytest.raises(ValueError, match="'f32' or 'bf16'"):
        OpenVinoDistances(nearest_precision="f16")


def test_empty_sides_and_bad_shapes(rng):
    dist = OpenVinoDistances()
    q, m = _pair(rng, 10, 4, 8)
    assert dist(q[:0], m).shape == (0, 4) and dist(q, m[:0]).shape == (10, 0)
    with pytest.raises(ValueError, match="must be"):
        dist(q, m[:, :5])


def test_output_is_the_callers(rng):
    """The infer request reuses its output buffer; a result kept across calls must not change."""
    dist = OpenVinoDistances()
    q, m = _pair(rng, 50, 6, 32)
    first = dist(q, m)
    keep = first.copy()
    dist(q + 1.0, m)
    np.testing.assert_array_equal(first, keep)


def test_only_the_numpy_backend_beside_openvino_takes_it(random_backbone):
    numpy_backend = make_backend("numpy", "test")
    ort = OrtEngine(random_backbone)
    assert with_engine_distances(numpy_backend, ort) is numpy_backend
    ov_engine = OpenVinoEngine(random_backbone, precision="f32", threads=2)
    moved = with_engine_distances(numpy_backend, ov_engine)
    assert isinstance(moved.sq_dists, OpenVinoDistances) and moved.sq_dists.threads == 2
    assert moved.sq_dists.nearest_precision == "f32"
    auto = OpenVinoEngine(random_backbone)  # bf16 where the CPU has it: the nearest search follows it
    assert with_engine_distances(numpy_backend, auto).sq_dists.nearest_precision == auto.precision
    assert moved.nearest == moved.sq_dists.nearest
    assert "distances on openvino" in moved.description
    assert moved.soft_nn_scores is numpy_backend.soft_nn_scores  # only the GEMM moves


@pytest.mark.parametrize("name", ["patchcore", "foct/edge", "oct/edge", "ct/edge"])
def test_methods_score_the_same_with_the_openvino_gemm(rng, random_backbone, name):
    """Scores, online admissions and memory growth equal the NumPy backend's, frame after frame (the
    transport methods' edge step runs as one OpenVINO graph)."""
    method, preset = name.split("/") if "/" in name else (name, None)
    feats = rng.standard_normal((2, 400, 24)).astype(np.float32)
    fg = np.ones((2, 400), bool)
    fg[:, :150] = False
    support = SupportSet(feats, fg, (20, 20))
    cls = method_class(method)
    params = make_params(method, None, preset=preset)
    ref, ov = cls.fit(support, params), cls.fit(support, params)
    f32_engine = OpenVinoEngine(random_backbone, precision="f32", threads=2)
    ov.use_backend(with_engine_distances(make_backend("numpy", "test"), f32_engine))
    if method == "patchcore":
        assert isinstance(ov._nearest.__self__, OpenVinoDistances)
    else:  # the edge transport step whole, one OpenVINO graph (its GEMM inside)
        assert isinstance(ov._soft_nn_transport, OpenVinoTransport) and isinstance(ov._sq, OpenVinoDistances)
    for i in range(4):
        frame = (feats[i % 2] + 0.5 * rng.standard_normal((400, 24))).astype(np.float32)
        if i == 3:
            frame[:40] += 4.0  # a defect
        a, b = ref.score(frame, update=True), ov.score(frame, update=True)
        np.testing.assert_allclose(b.scores, a.scores, rtol=1e-4, atol=1e-5)
        assert a.diagnostics.get("memory_size") == b.diagnostics.get("memory_size")
        assert a.diagnostics.get("admitted") == b.diagnostics.get("admitted")
