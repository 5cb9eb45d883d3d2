"""Transport maps, CT loss and its gradient, scores, the soft-NN reference; property tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_foct.runtime import navigator as nv
from edge_foct.runtime.episodic import best_queries
from edge_foct.runtime.knn import nearest_sq_dist
from edge_foct.runtime.transport import (backward_map, backward_map_best, concentration, cost_matrix, ct_loss,
                                         ct_loss_grad, exp_floor, fit_navigator, forward_map, nn_cost_scale,
                                         soft_nn_from_cost, soft_nn_scores, transport_maps, transport_scores)


def rand(m, q, d, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, d)), rng.standard_normal((q, d))


def test_maps_are_normalised_over_the_right_axes():
    d = np.random.default_rng(1).standard_normal((5, 8)) * 30
    fwd, bwd = transport_maps(d)
    np.testing.assert_allclose(fwd.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(bwd.sum(0), 1.0, rtol=1e-12)
    assert fwd.argmax(1).tolist() == d.argmin(1).tolist()
    assert bwd.argmax(0).tolist() == d.argmin(0).tolist()


def test_ct_loss_matches_its_definition_and_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    cost, d = rng.random((6, 9)) * 5, rng.standard_normal((6, 9))
    loss, grad, fwd, bwd = ct_loss_grad(cost, d, rho=0.3)
    want = 0.3 * (cost * fwd).sum(1).mean() + 0.7 * (cost * bwd).sum(0).mean()
    assert abs(loss - want) < 1e-12
    assert abs(ct_loss(cost, fwd, bwd, 0.3) - want) < 1e-12
    h = 1e-6
    for i, j in [(0, 0), (5, 8), (2, 4), (3, 1)]:
        e = np.zeros_like(d)
        e[i, j] = h
        num = (ct_loss_grad(cost, d + e, 0.3)[0] - ct_loss_grad(cost, d - e, 0.3)[0]) / (2 * h)
        assert abs(num - grad[i, j]) < 1e-8


def test_soft_nn_scores_equals_the_definition():
    mem, qry = rand(13, 17, 6, seed=3)
    tau = 0.7
    c = ((mem[:, None] - qry[None]) ** 2).sum(-1)  # (m, q)
    p = np.exp(-c / tau) / np.exp(-c / tau).sum(0, keepdims=True)
    scores, max_prob = soft_nn_scores(mem, qry, tau)
    np.testing.assert_allclose(scores, (p * c).sum(0), rtol=1e-9)
    np.testing.assert_allclose(max_prob, p.max(0), rtol=1e-9)
    s2, _ = soft_nn_from_cost(cost_matrix(mem, qry), tau)
    np.testing.assert_allclose(s2, scores, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(2, 12), q=st.integers(1, 9), tau=st.floats(0.05, 20.0))
def test_permuting_memory_rows_leaves_scores_unchanged(seed, m, q, tau):
    mem, qry = rand(m, q, 4, seed)
    perm = np.random.default_rng(seed + 1).permutation(m)
    a, pa = soft_nn_scores(mem, qry, tau)
    b, pb = soft_nn_scores(mem[perm], qry, tau)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pa, pb, rtol=1e-9, atol=1e-12)
    # the same through a random navigator (the full CT score)
    p = {k: v.astype(np.float64) for k, v in nv.torch_default_init(4, (5, 3), seed=seed).items()}
    s1 = transport_scores(cost_matrix(mem, qry), transport_maps(nv.forward(p, mem, qry)[0])[1])
    s2 = transport_scores(cost_matrix(mem[perm], qry), transport_maps(nv.forward(p, mem[perm], qry)[0])[1])
    np.testing.assert_allclose(s1, s2, rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 12), q=st.integers(1, 9))
def test_navigator_returning_a_large_multiple_of_the_cost_gives_the_nn_distance(seed, m, q):
    mem, qry = rand(m, q, 5, seed)
    cost = cost_matrix(mem, qry)
    nn = cost.min(axis=0)
    np.testing.assert_allclose(nearest_sq_dist(qry, mem)[0], nn, rtol=1e-5)  # PatchCore's score
    for k in (1e3, 1e6):  # D = k * C: tau = 1/k -> 0
        s = transport_scores(cost, transport_maps(k * cost)[1])
        assert np.all(s >= nn - 1e-9)  # an expectation over rows is never below the minimum
    gap = np.min(np.sort(cost, axis=0)[1] - np.sort(cost, axis=0)[0]) if m > 1 else 1.0
    if gap > 1e-3:  # without near-ties the soft score is the NN distance to within exp(-k gap)
        np.testing.assert_allclose(transport_scores(cost, transport_maps(1e6 * cost)[1]), nn, rtol=1e-6, atol=1e-9)


def test_concentration_between_uniform_and_hard():
    assert concentration(transport_maps(np.zeros((8, 5)))[1]) == pytest.approx(1 / 8)
    assert concentration(transport_maps(1e4 * np.eye(8, 5) * -1)[1]) == pytest.approx(1.0)


def test_nn_cost_scale_has_a_floor():
    assert nn_cost_scale(np.array([[0.0, 0.0], [4.0, 4.0]])) == pytest.approx(1e-3 * 2.0)
    assert nn_cost_scale(np.array([[1.0, 3.0], [2.0, 5.0]])) == pytest.approx(2.0)


def test_fit_navigator_lowers_the_ct_loss():
    mem, qry = rand(10, 20, 6, seed=8)
    mem, qry = mem.astype(np.float32), qry.astype(np.float32)
    cost = cost_matrix(mem, qry)
    nav = nv.torch_default_init(6, (8, 4), seed=0)
    losses = fit_navigator(cost, mem, qry, nav, steps=30, lr=1e-2)
    assert len(losses) == 30 and losses[-1] < losses[0]


def _spread_cost(seed=7):
    """float32 cost (40, 60) whose soft-NN exponents run from 0 to far below float32's exp range:
    35 rows near the queries, 5 rows no query comes near (every exponent of theirs < -104)."""
    rng = np.random.default_rng(seed)
    mem = 3.0 * rng.standard_normal((40, 8)).astype(np.float32)
    mem[35:] += 12.0
    qry = (mem[rng.integers(0, 35, 60)] + 0.3 * rng.standard_normal((60, 8))).astype(np.float32)
    cost = cost_matrix(mem, qry)
    return cost, 1.0 / nn_cost_scale(cost)


def _exact_maps(cost, scale):
    """float64 log-domain softmaxes of -scale * cost: (fwd, bwd) and log bwd, (40, 60) each."""
    z = -scale * cost.astype(np.float64)
    log_b = z - z.max(0) - np.log(np.exp(z - z.max(0)).sum(0))
    log_f = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    return np.exp(log_f), np.exp(log_b), log_b


def test_float32_maps_make_no_subnormals_and_match_the_exact_ones():
    cost, scale = _spread_cost()
    exponents = -scale * (cost - cost.min(0))
    assert (exponents < -104).mean() > 0.05 and ((exponents < -87.3) & (exponents > -103.9)).any()  # the test covers both
    fwd, bwd = forward_map(cost, scale), backward_map(cost, scale)
    tiny = np.finfo(np.float32).tiny
    for m in (fwd, bwd):
        assert m.dtype == np.float32 and not ((m != 0) & (np.abs(m) < tiny)).any()  # no subnormal entry
    fwd64, bwd64, _ = _exact_maps(cost, scale)
    np.testing.assert_allclose(fwd, fwd64, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(bwd, bwd64, rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(transport_scores(cost, bwd), (bwd64 * cost).sum(0), rtol=1e-5)
    assert ct_loss(cost, fwd, bwd) == pytest.approx(ct_loss(cost.astype(np.float64), fwd64, bwd64), rel=1e-5)
    assert exp_floor(np.float32) == pytest.approx(np.log(tiny * 1e5)) and exp_floor(np.float64) < -690


def _unfloored_backward(cost, scale):
    """The backward map as computed before the exponent floor (float32, subnormals and all)."""
    e = cost - cost.min(axis=0, keepdims=True)
    e *= -scale
    with np.errstate(under="ignore"):
        np.exp(e, out=e)
    return e / e.sum(axis=0, keepdims=True)


def test_backward_map_best_keeps_the_unfloored_picks_also_for_rows_no_query_reaches():
    cost, scale = _spread_cost()
    bwd, (j, p) = backward_map_best(cost, scale)
    np.testing.assert_array_equal(bwd, backward_map(cost, scale))
    old = _unfloored_backward(cost, scale)  # float32 probabilities, subnormals and all
    j_old, p_old = best_queries(old)
    reached = p_old > 0
    np.testing.assert_array_equal(j[reached], j_old[reached])
    np.testing.assert_allclose(p[reached], p_old[reached], rtol=2e-3)  # subnormals keep fewer digits
    unreached = old.max(axis=1) < 1e-30
    assert unreached.sum() >= 5 and (~reached).any()  # rows whose every float32 probability underflows
    _, _, log_b = _exact_maps(cost, scale)  # float64 log-probabilities: the exact picks
    np.testing.assert_array_equal(j[unreached], log_b[unreached].argmax(axis=1))  # no float32 ties there
    assert (p[~reached] == 0).all() and (j[~reached] != 0).any()  # ... they pick their best patch, not 0