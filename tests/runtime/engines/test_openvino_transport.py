"""FOCT's edge transport step as one OpenVINO graph: the NumPy reference's numbers, f32 always.

Tolerances: both sides are f32; the graph sums in another order (its GEMM, its softmaxes), so the
scores, the concentration, the CT loss and tau agree to ~1e-5 relative (asserted at 1e-4) and each
memory row picks the same best query patch (random features: no ties), with the same probability to
1e-3 relative (1e-6 absolute: subnormal probabilities keep fewer digits).
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_foct.runtime.compute_backend import make_backend, with_engine_distances
from edge_foct.runtime.transport import soft_nn_transport

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edge-foct[openvino]')")
from edge_foct.runtime.engines.openvino_engine import OpenVinoEngine  # noqa: E402
from edge_foct.runtime.engines.openvino_transport import OpenVinoTransport  # noqa: E402


@pytest.fixture(scope="module")
def transport():
    return OpenVinoTransport(threads=2)


def _features(rng, m, q, d, far=0):
    """queries (q, d); memory (m, d): rows near some queries, the last ``far`` rows far from all."""
    queries = rng.standard_normal((q, d)).astype(np.float32)
    memory = queries[rng.choice(q, m)] + 0.4 * rng.standard_normal((m, d))
    memory[m - far:] += 25.0
    return memory.astype(np.float32), queries


def _assert_same(got, want):
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-4)
    np.testing.assert_array_equal(got.best_query, want.best_query)
    np.testing.assert_allclose(got.best_prob, want.best_prob, rtol=1e-3, atol=1e-6)
    for name in ("concentration", "ct_loss", "tau"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-4), name
    assert got.scores.dtype == np.float32 and got.best_query.dtype == np.int64 and got.best_prob.dtype == np.float32


@pytest.mark.parametrize("m, q, d", [(1, 1, 8), (7, 50, 24), (40, 61, 16), (271, 1024, 64)])
@pytest.mark.parametrize("select_map", ["backward", "forward"])
def test_equals_the_numpy_reference(rng, transport, m, q, d, select_map):
    memory, queries = _features(rng, m, q, d)
    for tau_ratio, rho in ((0.5, 0.5), (2.0, 0.3)):
        want = soft_nn_transport(memory, queries, tau_ratio, rho, select_map)
        _assert_same(transport(memory, queries, tau_ratio, rho, select_map), want)


def test_rows_no_query_reaches_pick_as_the_reference(rng, transport):
    memory, queries = _features(rng, 60, 200, 16, far=15)
    want = soft_nn_transport(memory, queries, 0.1)
    assert (want.best_prob[-15:] == 0).all()  # the premise: every probability of those rows underflows
    _assert_same(transport(memory, queries, 0.1), want)


def test_tau_floor_and_exact_matches(rng, transport):
    memory, queries = _features(rng, 30, 80, 12)
    exact = np.concatenate([memory, memory[:3]])  # every query at distance 0 of some row: median 0
    got, want = transport(memory, exact, 0.5), soft_nn_transport(memory, exact, 0.5)
    assert want.tau > 0 and got.tau == pytest.approx(want.tau, rel=1e-3)
    one = np.ones((1, 5), np.float32)  # a single row equal to every query: all costs 0, tau unit 1
    assert transport(one, np.repeat(one, 4, 0), 0.5).tau == 0.5 == soft_nn_transport(one, np.repeat(one, 4, 0), 0.5).tau


def test_bad_input_is_one_clear_error(rng, transport):
    memory, queries = _features(rng, 5, 9, 4)
    with pytest.raises(ValueError, match="must be"):
        transport(memory, queries[:, :3], 0.5)
    with pytest.raises(ValueError, match="must be"):
        transport(memory[:0], queries, 0.5)
    with pytest.raises(ValueError, match="select_map"):
        transport(memory, queries, 0.5, 0.5, "sideways")


def test_taken_beside_openvino_and_f32_whatever_the_engine_precision(rng, random_backbone):
    numpy_backend = make_backend("numpy", "test")
    assert numpy_backend.soft_nn_transport is soft_nn_transport
    engine = OpenVinoEngine(random_backbone)  # bf16 where the CPU has it
    moved = with_engine_distances(numpy_backend, engine)
    assert isinstance(moved.soft_nn_transport, OpenVinoTransport) and "edge transport" in moved.description
    memory, queries = _features(rng, 100, 300, 32)
    memory += 5.0  # a common offset: |q|^2 ~ 16 x the costs, where rounding to bf16 inputs would show
    queries += 5.0
    _assert_same(moved.soft_nn_transport(memory, queries, 0.5), soft_nn_transport(memory, queries, 0.5))
