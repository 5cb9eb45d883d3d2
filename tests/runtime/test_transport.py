"""Transport maps, CT loss and its gradient, scores, the soft-NN reference; property tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_foct.runtime import navigator as nv
from edge_foct.runtime.knn import nearest_sq_dist
from edge_foct.runtime.transport import (concentration, cost_matrix, ct_loss, ct_loss_grad, fit_navigator,
                                         nn_cost_scale, soft_nn_from_cost, soft_nn_scores, transport_maps,
                                         transport_scores)


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
