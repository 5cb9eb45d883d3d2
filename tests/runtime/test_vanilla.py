"""vanilla: closed-form ridge reconstruction residual against the memory."""

from __future__ import annotations

import numpy as np
import pytest

from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.methods import SupportSet, make_params, method_class
from edge_foct.runtime.methods.vanilla import Vanilla, VanillaParams, ridge_residuals


def test_residuals_match_an_explicit_ridge_regression():
    rng = np.random.default_rng(0)
    mem, f = rng.standard_normal((9, 30)), rng.standard_normal((14, 30))
    ridge = 0.7
    # ridge regression as an augmented least-squares problem: [M^T; sqrt(r) I] a = [f_j; 0]
    aug = np.vstack([mem.T, np.sqrt(ridge) * np.eye(9)])  # (30 + 9, 9)
    A = np.linalg.lstsq(aug, np.vstack([f.T, np.zeros((9, 14))]), rcond=None)[0].T  # (14, 9)
    want = ((f - A @ mem) ** 2).sum(axis=1)
    np.testing.assert_allclose(ridge_residuals(f, mem, mem @ mem.T, ridge), want, rtol=1e-9)


def test_span_scores_low_and_orthogonal_scores_its_norm():
    rng = np.random.default_rng(1)
    mem = np.zeros((4, 10), np.float32)
    mem[:, :4] = rng.standard_normal((4, 4)).astype(np.float32)  # memory spans the first 4 axes
    method = Vanilla(mem, VanillaParams(ridge_rel=1e-6))
    inside = (rng.standard_normal((3, 4)) @ mem).astype(np.float32)  # in the span
    outside = np.zeros((1, 10), np.float32)
    outside[0, 7] = 2.0  # orthogonal to the span
    s = method.score(np.vstack([inside, outside])).scores
    assert s.dtype == np.float32 and s.shape == (4,)
    assert s[:3].max() < 1e-3 * float((inside**2).sum(1).min())
    assert s[3] == pytest.approx(4.0, rel=1e-4)


def test_more_ridge_never_lowers_the_residual():
    rng = np.random.default_rng(2)
    mem, f = rng.random((12, 20)), rng.random((8, 20))
    g = mem @ mem.T
    res = [ridge_residuals(f, mem, g, r) for r in (1e-3, 1e-1, 10.0)]
    assert (np.diff(np.stack(res), axis=0) >= -1e-12).all()


def test_fit_round_trip_registry_and_memory_permutation():
    rng = np.random.default_rng(3)
    feats = rng.random((2, 25, 8)).astype(np.float32)
    support = SupportSet(feats, None, (5, 5))
    params = make_params("vanilla", {"coreset_ratio": 0.4})
    method = method_class("vanilla").fit(support, params)
    assert method.memory.shape == (20, 8)
    q = rng.random((25, 8)).astype(np.float32)
    s = method.score(q).scores
    again = Vanilla.from_arrays(method.arrays(), params).score(q).scores
    np.testing.assert_array_equal(again, s)
    perm = Vanilla(method.memory[rng.permutation(20)], params).score(q).scores
    np.testing.assert_allclose(perm, s, rtol=1e-3, atol=1e-6)


def test_bad_ridge_names_the_value():
    with pytest.raises(EdgeFoctError, match="ridge_rel=0"):
        make_params("vanilla", {"ridge_rel": 0})
