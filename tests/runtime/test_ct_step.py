"""The NumPy CT step (runtime/ct_step.py): the contract the CUDA kernels are tested against."""

from __future__ import annotations

import numpy as np

from edge_foct.runtime import navigator as nv
from edge_foct.runtime.adamw import AdamWState, adamw_step
from edge_foct.runtime.ct_step import CTStep, ct_step
from edge_foct.runtime.transport import (backward_map, cost_matrix, ct_loss, fit_navigator, forward_map,
                                         soft_nn_scores, transport_scores)


def problem(m=6, q=9, d=5, hidden=(7, 4), seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    mem, qry = rng.standard_normal((m, d)).astype(dtype), rng.standard_normal((q, d)).astype(dtype)
    nav = {k: (3 * v).astype(dtype) for k, v in nv.torch_default_init(d, hidden, seed=seed).items()}
    return mem, qry, nav


def test_loss_scores_and_concentration_are_the_transport_definitions():
    mem, qry, nav = problem()
    step = ct_step(mem, qry, nav, rho=0.3)
    assert isinstance(step, CTStep) and step.scores.shape == (9,) and step.scores.dtype == np.float32
    dist = nv.forward(nav, mem, qry)[0]
    cost = cost_matrix(mem, qry)
    bwd = backward_map(dist)
    assert abs(step.loss - ct_loss(cost, forward_map(dist), bwd, 0.3)) < 1e-12
    np.testing.assert_allclose(step.scores, transport_scores(cost, bwd), rtol=1e-6)
    assert abs(step.concentration - bwd.max(axis=0).mean()) < 1e-12
    assert 1 / 6 < step.concentration < 1  # neither uniform nor hard: the gradient is not trivial


def test_gradient_matches_finite_differences_of_the_ct_loss():
    mem, qry, nav = problem(seed=1)
    step = ct_step(mem, qry, nav, rho=0.6)
    rng = np.random.default_rng(2)
    direction = {k: rng.standard_normal(v.shape) for k, v in nav.items()}
    h = 1e-6
    plus = ct_step(mem, qry, {k: v + h * direction[k] for k, v in nav.items()}, 0.6).loss
    minus = ct_step(mem, qry, {k: v - h * direction[k] for k, v in nav.items()}, 0.6).loss
    want = (plus - minus) / (2 * h)
    got = sum(float((step.grads[k] * direction[k]).sum()) for k in nav)
    assert abs(got - want) <= 1e-6 * max(1.0, abs(want)), (got, want)
    assert abs(float(step.grads["b3"][0])) < 1e-12  # both maps ignore a shift of D


def test_step_plus_adamw_is_one_step_of_fit_navigator():
    mem, qry, nav = problem(seed=3, dtype=np.float32)
    fitted = {k: v.copy() for k, v in nav.items()}
    losses = fit_navigator(cost_matrix(mem, qry), mem, qry, fitted, 1, lr=1e-2)
    step = ct_step(mem, qry, nav)
    adamw_step(nav, step.grads, AdamWState.zeros_like(nav), 1e-2)
    assert abs(losses[0] - step.loss) <= 1e-6 * abs(step.loss)
    for k in nav:
        np.testing.assert_allclose(nav[k], fitted[k], rtol=1e-6, atol=1e-7)


def test_soft_nn_navigator_step_scores_are_the_soft_nearest_neighbour():
    mem, qry, _ = problem(m=7, q=5, d=4, dtype=np.float32)
    nav = nv.soft_nn_init(4, (3, 2), tau=0.8)
    step = ct_step(mem, qry, nav)
    scores, max_prob = soft_nn_scores(mem, qry, 0.8)
    np.testing.assert_allclose(step.scores, scores, rtol=1e-5)
    assert abs(step.concentration - float(max_prob.mean())) < 1e-6
