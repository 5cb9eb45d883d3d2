"""PatchCore+: the M-step gradient, the step rule, the pieces of the EM, and the method."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.methods import SupportSet, make_params, method_class
from edge_foct.runtime.methods.patchcore_plus import (PatchCorePlus, PatchCorePlusParams, Prototypes, init_weights,
                                                      lipschitz, mstep, mstep_gradient, objective, transport_cost)
from edge_foct.runtime.sinkhorn import sinkhorn_log


def _setup(seed: int, n: int = 6, m: int = 9, c: int = 5):
    """A float64 problem: prototypes M, query f, a transform W and a transport plan T at W."""
    rng = np.random.default_rng(seed)
    M, f = rng.standard_normal((n, c)), rng.standard_normal((m, c))
    G, F = M @ M.T, f @ M.T
    W = rng.standard_normal((m, n)) * 0.3
    C = transport_cost(W, W @ G, np.diagonal(G).copy())
    T = sinkhorn_log(C, None, None, 0.5 * float(np.median(C)), 50).plan
    return M, f, G, F, W, T


def _loss(W, M, f, T, lam):
    """L(W; T) written directly from the definition, in feature space (no Gram tricks)."""
    R = W @ M  # (m, c)
    C = ((M[:, None, :] - R[None, :, :]) ** 2).sum(-1)  # (n, m)
    return ((f - R) ** 2).sum() + lam * (T * C).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mstep_gradient_matches_finite_differences(seed):
    M, f, G, F, W, T = _setup(seed)
    lam, h = 0.3, 1e-6
    grad = mstep_gradient(W @ G, F, G, T, lam)
    num = np.zeros_like(W)
    for idx in np.ndindex(*W.shape):
        d = np.zeros_like(W)
        d[idx] = h
        num[idx] = (_loss(W + d, M, f, T, lam) - _loss(W - d, M, f, T, lam)) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def test_objective_and_cost_match_the_definition():
    M, f, G, F, W, T = _setup(3)
    WG = W @ G
    C = transport_cost(W, WG, np.diagonal(G).copy())
    R = W @ M
    np.testing.assert_allclose(C, ((M[:, None, :] - R[None, :, :]) ** 2).sum(-1), atol=1e-10)
    np.testing.assert_allclose(objective(W, WG, F, float((f * f).sum()), T, C, 0.3), _loss(W, M, f, T, 0.3),
                               rtol=1e-10)


def test_one_product_mstep_is_the_gradient_step():
    M, f, G, F, W, T = _setup(7)
    step = 1e-3
    W1, W1G = mstep(W, W @ G, F, F @ G, np.hstack([G, G @ G]), T, 0.3, step)
    np.testing.assert_allclose(W1, W - step * mstep_gradient(W @ G, F, G, T, 0.3), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(W1G, W1 @ G, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("lam", [0.0, 0.3, 3.0])
def test_lipschitz_step_never_increases_the_objective(lam):
    M, f, G, F, W, T = _setup(4)
    sigma = float(np.linalg.eigvalsh(G)[-1])
    for scale in (1.0, 1.9):  # 1/L is a descent step; anything below 2/L still is, on a quadratic
        step = scale / lipschitz(sigma, T, lam)
        W1 = W - step * mstep_gradient(W @ G, F, G, T, lam)
        assert _loss(W1, M, f, T, lam) < _loss(W, M, f, T, lam)
    W2 = W - 2.2 / lipschitz(sigma, T, lam) * mstep_gradient(W @ G, F, G, T, lam)
    assert np.isfinite(_loss(W2, M, f, T, lam))


def test_init_weights_is_the_least_squares_solution():
    rng = np.random.default_rng(5)
    M, f = rng.standard_normal((7, 20)), rng.standard_normal((11, 20))
    W0 = init_weights(f @ M.T, M @ M.T, 1e-9)
    want = np.linalg.lstsq(M.T, f.T, rcond=None)[0].T  # argmin_W ||f - W M||
    np.testing.assert_allclose(W0, want, rtol=1e-6, atol=1e-8)


def test_lift_gives_f_and_w0_in_one_product():
    rng = np.random.default_rng(6)
    M, f = rng.standard_normal((7, 20)), rng.standard_normal((11, 20))
    P = Prototypes.build(M, ridge_rel=1e-2)
    FW = f @ P.lift.T
    G = M @ M.T
    np.testing.assert_allclose(FW[:, :7], f @ M.T, rtol=1e-10)
    np.testing.assert_allclose(FW[:, 7:], init_weights(f @ M.T, G, 1e-2 * np.trace(G) / 7), rtol=1e-8, atol=1e-10)
    assert P.sigma_max == pytest.approx(np.linalg.eigvalsh(G)[-1])
    np.testing.assert_allclose(FW[:, :7] - P.ridge * FW[:, 7:], FW[:, 7:] @ G, rtol=1e-8, atol=1e-10)  # W0 G


def _support(seed: int, k: int = 2, grid=(6, 6), d: int = 16) -> SupportSet:
    rng = np.random.default_rng(seed)
    base = rng.random((1, grid[0] * grid[1], d)).astype(np.float32)
    feats = base + 0.05 * rng.standard_normal((k, grid[0] * grid[1], d)).astype(np.float32)
    return SupportSet(np.abs(feats), None, grid)


PARAMS = PatchCorePlusParams(coreset_ratio=0.3)


def test_scores_shape_diagnostics_and_anomaly():
    support = _support(0)
    method = PatchCorePlus.fit(support, PARAMS)
    normal = support.features[0].copy()
    defect = normal.copy()
    defect[7] += 3.0  # one patch far from everything in memory
    rn, rd = method.score(normal), method.score(defect)
    assert rn.scores.shape == (36,) and rn.scores.dtype == np.float32 and np.isfinite(rn.scores).all()
    assert int(np.argmax(rd.scores)) == 7 and rd.scores.max() > 10 * rn.scores.max()
    for key in ("marginal_error", "objective_before", "objective_after", "eps", "concentration"):
        assert np.isfinite(rd.diagnostics[key]), key
    n = rd.diagnostics["memory_size"]
    assert n == method.prototypes.shape[0] and 1.0 / n <= rd.diagnostics["concentration"] <= 1.0 + 1e-6


def test_refinement_changes_the_scores_and_lam_zero_keeps_the_reconstruction():
    support = _support(1)
    q = support.features[1] + 0.2 * np.random.default_rng(2).random((36, 16)).astype(np.float32)
    base = PatchCorePlus.fit(support, PARAMS)
    with_ot = base.score(q).scores
    no_ot = PatchCorePlus(base.prototypes, PatchCorePlusParams(coreset_ratio=0.3, lam=0.0)).score(q).scores
    assert not np.allclose(with_ot, no_ot, rtol=1e-3)
    assert with_ot.mean() > no_ot.mean()  # the OT term pulls refined prototypes away from the query


def test_no_ot_runs_the_mstep_without_sinkhorn(monkeypatch):
    """lam = 0 skips the E-step: the same W as the EM loop's M-steps (whose T is then weightless)."""
    import edge_foct.runtime.methods.patchcore_plus as pp

    rng = np.random.default_rng(3)
    protos, q = rng.random((10, 16)).astype(np.float32), rng.random((30, 16)).astype(np.float32)
    p = PatchCorePlusParams(lam=0.0, em_iters=4, mstep="gradient")
    P = pp.Prototypes.build(protos, p.ridge_rel)
    F = q @ protos.T
    W = pp.init_weights(F, P.gram, P.ridge)
    WG, FG, T = W @ P.gram, F @ P.gram, np.full((10, 30), 1.0 / 300, np.float32)
    for _ in range(p.em_iters):
        W, WG = pp.mstep(W, WG, F, FG, P.G_G2, T, 0.0, p.step_scale / pp.lipschitz(P.sigma_max, T, 0.0))

    def no_sinkhorn(*a, **k):
        raise AssertionError("no-ot ran Sinkhorn")

    monkeypatch.setattr(pp, "sinkhorn_warm", no_sinkhorn)
    r = pp.refine(q, P, p)
    np.testing.assert_allclose(r.W, W, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r.WG, WG, rtol=1e-4, atol=1e-4)
    assert "concentration" not in r.diagnostics and r.plan is None
    assert np.isfinite(PatchCorePlus(protos, p).score(q).scores).all()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000))
def test_permuting_prototypes_or_patches(seed):
    rng = np.random.default_rng(seed)
    protos = rng.random((8, 12)).astype(np.float32)
    q = rng.random((20, 12)).astype(np.float32)
    p = PatchCorePlusParams()
    s = PatchCorePlus(protos, p).score(q).scores
    s_perm = PatchCorePlus(protos[rng.permutation(8)], p).score(q).scores
    np.testing.assert_allclose(s_perm, s, rtol=1e-3, atol=1e-4 * float(s.max()))
    order = rng.permutation(20)
    np.testing.assert_allclose(PatchCorePlus(protos, p).score(q[order]).scores, s[order], rtol=1e-3,
                               atol=1e-4 * float(s.max()))


def test_defaults_are_the_suppress_reading_and_presets_resolve():
    assert make_params("patchcore+") == make_params("patchcore+", preset="suppress")
    lit = make_params("patchcore+", preset="as-written")
    assert (lit.lam_scale, lit.mstep, lit.lam) == ("sum", "gradient", 0.3)
    nearest = make_params("patchcore+", preset="no-ot")
    assert nearest.lam == 0.0 and nearest.score == "nearest"


def test_closed_no_ot_is_the_ridge_reconstruction():
    """lam = 0 with the exact M-step: W = W0, so the own residual is vanilla's ridge residual."""
    from edge_foct.runtime.methods.patchcore_plus import refine
    from edge_foct.runtime.methods.vanilla import ridge_residuals

    rng = np.random.default_rng(8)
    protos, q = rng.random((10, 16)).astype(np.float32), rng.random((30, 16)).astype(np.float32)
    p = PatchCorePlusParams(lam=0.0, score="own")
    P = Prototypes.build(protos, p.ridge_rel)
    r = refine(q, P, p)
    np.testing.assert_allclose(r.W, init_weights(q @ protos.T, P.gram, P.ridge), rtol=1e-3, atol=1e-4)
    own = PatchCorePlus(protos, p).score(q).scores
    want = ridge_residuals(q, protos, P.gram, P.ridge)  # ||f - W0 M||^2 with the same ridge
    np.testing.assert_allclose(own, want, rtol=1e-3, atol=1e-4)


def test_bank_round_trip_and_registry():
    support = _support(3)
    method = PatchCorePlus.fit(support, PARAMS)
    again = method_class("patchcore+").from_arrays(method.arrays(), PARAMS)
    q = support.features[1]
    np.testing.assert_array_equal(again.score(q).scores, method.score(q).scores)
    assert make_params("patchcore+", {"lam": 0.1}).lam == 0.1


@pytest.mark.parametrize("bad", [{"em_iters": 0}, {"eps_rel": 0.0}, {"step_scale": 2.0}, {"lam": -1.0}])
def test_bad_params_name_the_value(bad):
    with pytest.raises(EdgeFoctError, match=next(iter(bad))):
        make_params("patchcore+", bad)


def _suppression_problem(seed: int = 0, d: int = 64, n: int = 20, m: int = 60):
    """Normal prototypes M (n, d) and a query f (m, d) of new normal patches, three of which are
    replaced by one anomaly that lies IN the span of M (so the least-squares W0 reconstructs it
    exactly) but far from every prototype: what only the transport term can keep out."""
    rng = np.random.default_rng(seed)
    mu = np.abs(rng.standard_normal(d))
    M = (mu + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
    f = (mu + 0.3 * rng.standard_normal((m, d))).astype(np.float32)
    cells = np.zeros(m, bool)
    cells[[3, 17, 41]] = True
    f[cells] = M[0] + 3.0 * (M[1] - M[2])
    return M, f, cells


@pytest.mark.parametrize("mstep", ["closed", "gradient"])
def test_transport_term_suppresses_the_anomaly_in_the_refined_prototypes(mstep):
    """With the term, the refined prototypes of anomalous cells take the anomaly in far less than
    without it (their residual grows), while those of normal cells barely move."""
    from edge_foct.runtime.methods.patchcore_plus import refine

    M, f, cells = _suppression_problem()
    p = PatchCorePlusParams(lam_scale="mean", mstep=mstep)
    P = Prototypes.build(M, p.ridge_rel)
    with_t, without = refine(f, P, p), refine(f, P, PatchCorePlusParams(lam_scale="mean", mstep=mstep, lam=0.0))
    a, b = with_t.own_residuals(f), without.own_residuals(f)
    norm = float(b[~cells].mean())
    assert b[cells].max() < 0.01 * norm  # without the term the anomaly is reconstructed
    grow_def, grow_norm = (a[cells] - b[cells]).mean() / norm, (a[~cells] - b[~cells]).mean() / norm
    assert grow_def > 10 * grow_norm > 0
    if mstep == "closed":  # the exact M-step moves them back to the normal residual's scale
        assert a[cells].min() > 0.5 * norm
    # and the score (nearest refined prototype) of the anomaly rises with the term
    assert with_t.nearest_refined(f)[cells].min() > 3 * without.nearest_refined(f)[cells].max()
    # the plan's cost is concentrated on the anomalous columns
    tc = (with_t.plan * with_t.cost).sum(axis=0)
    assert tc[cells].sum() / tc.sum() > 2 * cells.mean()


def test_literal_scale_leaves_the_anomaly_in():
    """Eq. 7 as written (reconstruction summed over m patches against a plan of mass 1): the term
    weighs lam / m per patch and the anomaly stays reconstructed: why lam_scale exists."""
    from edge_foct.runtime.methods.patchcore_plus import refine

    M, f, cells = _suppression_problem()
    p = PatchCorePlusParams(lam_scale="sum", mstep="closed")
    P = Prototypes.build(M, p.ridge_rel)
    a = refine(f, P, p).own_residuals(f)
    b = refine(f, P, PatchCorePlusParams(lam_scale="sum", mstep="closed", lam=0.0)).own_residuals(f)
    assert a[cells].mean() < 0.01 * b[~cells].mean()
    assert PatchCorePlusParams(lam=0.3, lam_scale="mean").lam_effective(60) == pytest.approx(18.0)


def test_closed_mstep_is_the_minimiser_for_a_fixed_plan():
    """mstep_closed's W: the gradient of L(W; T) (ridge in the Gram metric) vanishes there."""
    from edge_foct.runtime.methods.patchcore_plus import mstep_closed

    M, f, G, F, _, T = _setup(11)
    r, lam = 1e-3, 0.7
    Gr = G + r * np.eye(G.shape[0])
    W0 = F @ np.linalg.inv(Gr)
    W, WG = mstep_closed(W0, W0 @ G, G, T, lam)
    grad = 2.0 * (W @ Gr - F) + 2.0 * lam * (T.sum(axis=0)[:, None] * (W @ Gr) - T.T @ Gr)
    np.testing.assert_allclose(grad, 0.0, atol=1e-9)
    np.testing.assert_allclose(WG, W @ G, rtol=1e-10, atol=1e-12)


def test_suppress_preset_raises_the_in_span_anomaly_and_no_ot_does_not():
    """The registry's presets: `suppress` (the reading in which the term acts) scores the in-span
    anomaly of _suppression_problem far above `no-ot`, which reconstructs it."""
    M, f, cells = _suppression_problem()
    sup = PatchCorePlus(M, make_params("patchcore+", preset="suppress")).score(f).scores
    no_ot = PatchCorePlus(M, make_params("patchcore+", preset="no-ot")).score(f).scores
    assert make_params("patchcore+", preset="suppress").lam_effective(60) == pytest.approx(18.0)
    assert sup[cells].min() > 3 * no_ot[cells].max()
    assert sup[cells].min() > 0.5 * np.median(sup[~cells])  # now scored like an unseen normal patch
    assert no_ot[cells].max() < 0.01 * np.median(no_ot[~cells])  # no-ot: taken in, scored as perfect


# --- online memory (seed 001 Table 6, preset "online") ---------------------------------------------
ONLINE = PatchCorePlusParams(coreset_ratio=0.3, online_capacity=40)


def test_online_admits_only_queries_judged_good_at_the_gate():
    support = _support(11)
    method = PatchCorePlus.fit(support, ONLINE)
    assert method.online and not PatchCorePlus.fit(support, PARAMS).online
    n0 = method.prototypes.shape[0]
    normal = support.features[1]
    defect = normal.copy()
    defect[5] += 3.0
    # no gate: nothing enters (fails closed)
    r = method.score(normal)
    assert r.diagnostics["admitted"] == 0 and len(method.memory) == 0
    gate = 2.0 * float(method.score(normal, update=False).scores.max())
    method.set_gate(gate)
    rd = method.score(defect)  # above the gate: refused
    assert rd.scores.max() > gate and rd.diagnostics["admitted"] == 0 and len(method.memory) == 0
    bad = normal.copy()
    bad[3, 0] = np.nan  # a non-finite score is never "good"
    assert method.score(bad).diagnostics["admitted"] == 0
    assert method.score(normal, update=False).diagnostics["admitted"] == 0  # update=False learns nothing
    rn = method.score(normal)  # good: a coreset of its refined prototypes enters
    k = rn.diagnostics["admitted"]
    assert k == round(0.3 * 36) and len(method.memory) == k
    assert method.score(normal, update=False).diagnostics["memory_size"] == n0 + k


def test_online_rows_are_refined_prototypes_and_the_memory_is_bounded():
    from edge_foct.runtime.methods.patchcore_plus import refine

    support = _support(12)
    method = PatchCorePlus.fit(support, ONLINE)
    method.set_gate(1e9)
    q = support.features[0] + 0.05
    r = refine(q, method._protos, method.params)
    method.score(q)
    rows = method.memory.rows()[0]
    refined = r.W @ method.prototypes  # (m, c): each admitted row is one of the query's W* M
    d = ((rows[:, None, :] - refined[None, :, :]) ** 2).sum(-1).min(axis=1)
    assert d.max() < 1e-6 * float((refined ** 2).sum(-1).mean())
    for i in range(6):  # 11 rows per query: the 40-row capacity is passed and compressed
        method.score(support.features[i % 2] + 0.01 * i)
        assert len(method.memory) <= ONLINE.online_capacity
    assert len(method.memory) > 0


def test_online_memory_changes_the_next_score_and_its_state_round_trips():
    support = _support(13)
    method = PatchCorePlus.fit(support, ONLINE)
    method.set_gate(1e9)
    q = support.features[1] + 0.2 * np.random.default_rng(3).random((36, 16)).astype(np.float32)
    before = method.score(q, update=False).scores
    method.score(q)  # admitted: its refined prototypes are in the memory now
    after = method.score(q, update=False).scores
    assert not np.allclose(before, after, rtol=1e-3)
    state = method.episodic_state()
    again = PatchCorePlus.from_arrays(method.arrays(), ONLINE)
    np.testing.assert_array_equal(again.score(q, update=False).scores, before)  # the bank alone
    again.restore_episodic(state)
    np.testing.assert_allclose(again.score(q, update=False).scores, after, rtol=1e-6)
    assert PatchCorePlus.fit(support, PARAMS).episodic_state() == {}


def test_online_preset_resolves_and_bad_online_params_are_one_line():
    p = make_params("patchcore+", preset="online")
    assert p.online_capacity == 128 and (p.lam_scale, p.mstep) == ("mean", "closed")
    for bad in ({"online_capacity": -1}, {"online_keep": 1.0}):
        with pytest.raises(EdgeFoctError, match=next(iter(bad))):
            make_params("patchcore+", bad)
