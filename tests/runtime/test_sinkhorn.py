"""Log-domain Sinkhorn: marginals, agreement with POT, stability, fixed schedule."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_foct.runtime.sinkhorn import SinkhornResult, sinkhorn_log, sinkhorn_warm, softmin


def _problem(seed: int, n: int, m: int, scale: float = 1.0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, 3)), rng.standard_normal((m, 3))
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) * scale  # (n, m) squared Euclidean
    a, b = rng.random(n) + 0.2, rng.random(m) + 0.2
    return cost.astype(dtype), (a / a.sum()).astype(dtype), (b / b.sum()).astype(dtype)


def test_softmin_is_the_scaled_logsumexp():
    rng = np.random.default_rng(0)
    cost = rng.random((4, 9)).astype(np.float32) * 5
    h = rng.standard_normal(9).astype(np.float32)
    eps = 0.7
    z = (h[None, :].astype(np.float64) - cost) / eps
    want = -eps * np.log(np.exp(z).sum(axis=1))
    got = softmin(eps, cost, h)
    assert got.dtype == np.float32 and got.shape == (4,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("uniform", [True, False])
def test_marginals_within_tolerance(uniform):
    cost, a, b = _problem(1, 40, 70)
    if uniform:
        a, b = None, None
    eps = 0.1 * float(np.median(cost))
    r = sinkhorn_log(cost, a, b, eps, 300)
    want_a = np.full(40, 1 / 40) if a is None else a
    want_b = np.full(70, 1 / 70) if b is None else b
    assert isinstance(r, SinkhornResult) and r.plan.dtype == np.float32 and r.plan.shape == (40, 70)
    np.testing.assert_allclose(r.plan.sum(axis=0), want_b, rtol=1e-4)  # columns: exact after each iteration
    np.testing.assert_allclose(r.plan.sum(axis=1), want_a, rtol=1e-3)
    assert r.marginal_error < 1e-3
    assert r.marginal_error == pytest.approx(float(np.abs(r.plan.sum(axis=1) - want_a).sum()), abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), m=st.integers(1, 12), seed=st.integers(0, 10_000),
       eps_rel=st.sampled_from([0.2, 0.5, 1.0]))
def test_marginals_property(n, m, seed, eps_rel):
    cost, a, b = _problem(seed, n, m)
    eps = eps_rel * (float(np.median(cost)) + 1e-3)
    r = sinkhorn_log(cost, a, b, eps, 500)
    assert np.isfinite(r.plan).all() and (r.plan >= 0).all()
    np.testing.assert_allclose(r.plan.sum(axis=0), b, rtol=1e-3, atol=1e-6)
    assert r.marginal_error < 1e-3  # (smaller eps converges more slowly: not a fixed-budget property)


@pytest.fixture(scope="module")
def pot_bregman():
    """POT's bregman module, imported without its torch / jax / tf / cupy backends: we compare NumPy
    with NumPy, and importing torch alone costs seconds."""
    keys = [f"POT_BACKEND_DISABLE_{b}" for b in ("PYTORCH", "JAX", "TENSORFLOW", "CUPY")]
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        ot = pytest.importorskip("ot")
    finally:
        for k, v in old.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    return ot.bregman


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_pot_sinkhorn_log(seed, pot_bregman):
    cost, a, b = _problem(seed, 15, 23, dtype=np.float64)
    eps = 0.2 * float(np.median(cost))
    want = pot_bregman.sinkhorn_log(a, b, cost, eps, numItermax=3000, stopThr=0.0, warn=False)
    got = sinkhorn_log(cost, a, b, eps, 3000)
    np.testing.assert_allclose(got.plan, want, rtol=1e-6, atol=1e-10)
    got32 = sinkhorn_log(cost.astype(np.float32), a.astype(np.float32), b.astype(np.float32), eps, 3000)
    np.testing.assert_allclose(got32.plan, want, rtol=2e-3, atol=1e-7)


@pytest.mark.parametrize("eps_rel", [1e-3, 1e-2])
def test_stable_for_small_eps_and_large_costs(eps_rel):
    cost, a, b = _problem(3, 30, 50, scale=1e4)  # costs up to ~1e5: exp(-C / eps) underflows outside log domain
    eps = eps_rel * float(np.median(cost))
    r = sinkhorn_log(cost, a, b, eps, 50)
    for x in (r.plan, r.f, r.g):
        assert np.isfinite(x).all()
    assert np.isfinite(r.marginal_error)
    np.testing.assert_allclose(r.plan.sum(axis=0), b, rtol=1e-3)
    # a small eps gives a sparse, near-deterministic plan: most columns send their mass to one row
    assert (r.plan.max(axis=0) / b).mean() > 0.5


def test_fixed_iteration_count_reports_error_as_output():
    cost, _, _ = _problem(4, 20, 60)
    eps = 0.02 * float(np.median(cost))
    errs = [sinkhorn_log(cost, None, None, eps, k).marginal_error for k in (1, 3, 30, 300)]
    assert all(isinstance(e, float) for e in errs)
    assert errs[0] > errs[2] > errs[3]  # the schedule does not stop early: more iterations, smaller error
    r1, r2 = sinkhorn_log(cost, None, None, eps, 3), sinkhorn_log(cost, None, None, eps, 3)
    assert np.array_equal(r1.plan, r2.plan)  # deterministic for a fixed schedule


def test_rejects_marginal_of_wrong_length():
    cost, a, _ = _problem(5, 4, 6)
    with pytest.raises(ValueError, match="marginal has shape"):
        sinkhorn_log(cost, a[:3], None, 0.1, 2)


def test_shifted_cost_is_a_warm_start():
    """Sinkhorn on C - f0 - g0 from zero potentials = Sinkhorn on C continued from (f0, g0)
    (how PatchCore+ warm-starts its E-steps through this contract)."""
    cost, a, b = _problem(6, 12, 18, dtype=np.float64)
    eps = 0.05 * float(np.median(cost))
    first = sinkhorn_log(cost, a, b, eps, 7)
    cont = sinkhorn_log(cost - first.f[:, None] - first.g[None, :], a, b, eps, 5)
    whole = sinkhorn_log(cost, a, b, eps, 12)
    np.testing.assert_allclose(cont.plan, whole.plan, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(first.f + cont.f, whole.f, rtol=1e-9, atol=1e-9)
    assert cont.marginal_error == pytest.approx(whole.marginal_error, rel=1e-6)


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("n_iter", [1, 2, 5, 40])
def test_warm_has_the_log_domain_iterates(uniform, n_iter):
    """sinkhorn_warm from (f0, g0) = sinkhorn_log on C - f0 - g0, potentials returned as totals."""
    cost, a, b = _problem(11, 37, 90)
    a, b = (None, None) if uniform else (a, b)
    eps = 0.1 * float(np.median(cost))
    rng = np.random.default_rng(1)
    f0, g0 = (rng.standard_normal(37) * eps).astype(np.float32), (rng.standard_normal(90) * eps).astype(np.float32)
    want = sinkhorn_log(cost - f0[:, None] - g0[None, :], a, b, eps, n_iter)
    got = sinkhorn_warm(cost, a, b, eps, n_iter, f0, g0)
    assert got.plan.dtype == np.float32 and got.f.dtype == np.float32
    np.testing.assert_allclose(got.plan, want.plan, rtol=2e-3, atol=1e-7)
    np.testing.assert_allclose(got.f, f0 + want.f, atol=1e-4 * eps * 40)
    np.testing.assert_allclose(got.g, g0 + want.g, atol=1e-4 * eps * 40)
    assert got.marginal_error == pytest.approx(want.marginal_error, rel=2e-2, abs=1e-6)
    cold = sinkhorn_warm(cost, a, b, eps, n_iter)  # no start: sinkhorn_log itself
    np.testing.assert_allclose(cold.plan, sinkhorn_log(cost, a, b, eps, n_iter).plan, rtol=2e-3, atol=1e-7)


def test_warm_falls_back_to_the_log_domain_when_the_kernel_underflows(monkeypatch):
    """A column ~1e4 eps away from every row: exp underflows even in float64; the result is still
    the log-domain one (finite, columns summing to b)."""
    from edge_foct.runtime import sinkhorn as module

    cost, _, _ = _problem(12, 8, 10, dtype=np.float32)
    eps = 0.01 * float(np.median(cost))
    cost[:, 3] += 1e4 * eps
    calls = []
    monkeypatch.setattr(module, "sinkhorn_log", lambda *a: calls.append(1) or sinkhorn_log(*a))
    got = sinkhorn_warm(cost, None, None, eps, 6)
    assert calls == [1]  # the fallback ran
    want = sinkhorn_log(cost, None, None, eps, 6)
    assert np.isfinite(got.plan).all() and np.isfinite(got.f).all() and np.isfinite(got.g).all()
    np.testing.assert_allclose(got.plan, want.plan, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got.plan.sum(axis=0), 1 / 10, rtol=1e-3)  # float32 costs ~1e4 eps
