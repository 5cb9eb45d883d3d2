"""WinCLIP / WinCLIP+ on synthetic packed CLIP features (torch-free): zero-shot maths against a
direct computation, few-shot memory, the K = 0 path, bank round trip, and WinCLIP+ running the
PatchCore+ refinement code itself."""

from __future__ import annotations

import numpy as np
import pytest

from edge_foct.runtime import names
from edge_foct.runtime import threshold as thresholds
from edge_foct.runtime.clip_layout import ClipLayout
from edge_foct.runtime.errors import BackboneError, EdgeFoctError
from edge_foct.runtime.fit import fit_bank
from edge_foct.runtime.config import Config
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.methods import SupportSet, make_params, method_class
from edge_foct.runtime.methods import patchcore_plus, winclip

LAYOUT = ClipLayout(grid=5, patch_dim=32, embed_dim=24, window_sizes=(2, 3))


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def context(rng, layout=LAYOUT):
    e = layout.embed_dim
    return {names.CLIP_TEXT_NORMAL: rng.standard_normal((7, e)).astype(np.float32),
            names.CLIP_TEXT_ANOMALOUS: rng.standard_normal((4, e)).astype(np.float32),
            **layout.to_arrays()}


def parts(rng, layout=LAYOUT, basis=None):
    """Random parts of one image: patches (Q, P), image (E,), windows per size; rows drawn from
    ``basis`` (r, dim) combinations when given (a low-rank 'normal' distribution)."""
    g = layout.grid

    def draw(n, dim):
        if basis is None:
            return rng.standard_normal((n, dim)).astype(np.float32)
        return (rng.standard_normal((n, basis[dim].shape[0])) @ basis[dim]).astype(np.float32)

    return (draw(g * g, layout.patch_dim), draw(1, layout.embed_dim)[0],
            [draw((g - k + 1) ** 2, layout.embed_dim) for k in layout.window_sizes])


def pack(p, layout=LAYOUT):
    """The graph's packing (runtime/names.py): (Q, D), windows anchored at their top-left patch."""
    patches, image, windows = p
    g, P, E = layout.grid, layout.patch_dim, layout.embed_dim
    f = np.zeros((g, g, layout.dim), np.float32)
    f[..., :P] = patches.reshape(g, g, P)
    f[..., P:P + E] = image
    for i, (w, k) in enumerate(zip(windows, layout.window_sizes)):
        m, off = g - k + 1, P + E * (1 + i)
        f[:m, :m, off:off + E] = w.reshape(m, m, E)
    return f.reshape(g * g, layout.dim)


def support_set(rng, k, ctx, basis=None):
    feats = np.stack([pack(parts(rng, basis=basis)) for _ in range(k)]) if k else \
        np.zeros((0, 25, LAYOUT.dim), np.float32)
    return SupportSet(feats, None, (5, 5), ctx)


def test_split_inverts_the_packing(rng):
    p = parts(rng)
    c = LAYOUT.split(pack(p))
    np.testing.assert_allclose(c.patches, unit(p[0]), rtol=1e-5)
    np.testing.assert_allclose(c.image, unit(p[1]), rtol=1e-5)
    for got, want in zip(c.windows, p[2]):
        np.testing.assert_allclose(got, unit(want), rtol=1e-5)
    with pytest.raises(BackboneError, match="do not belong together"):
        LAYOUT.split(pack(p)[:, :-1])


def test_zero_shot_with_no_support_image_matches_a_direct_computation(rng):
    ctx = context(rng)
    m = method_class("winclip").fit(support_set(rng, 0, ctx), make_params("winclip", {"temperature": 0.15}))
    p = parts(rng)
    got = m.score(pack(p)).scores  # (Q,)
    t = unit(np.stack([unit(ctx[names.CLIP_TEXT_NORMAL]).mean(0), unit(ctx[names.CLIP_TEXT_ANOMALOUS]).mean(0)]))

    def prob(v):
        a, b = np.exp(unit(v) @ t[0] / 0.15), np.exp(unit(v) @ t[1] / 0.15)
        return b / (a + b)

    g = 5
    maps = [np.full(g * g, prob(p[1]))]
    for w, k in zip(p[2], (2, 3)):
        m_ = g - k + 1
        agg = np.zeros(g * g)
        for q in range(g * g):
            r, c = divmod(q, g)
            cov = [prob(w[a * m_ + b]) for a in range(m_) for b in range(m_) if a <= r < a + k and b <= c < b + k]
            agg[q] = len(cov) / sum(1 / s for s in cov)
        maps.append(agg)
    want = 3 / sum(1 / x for x in maps)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got.shape == (25,) and np.isfinite(got).all() and ((got > 0) & (got < 1)).all()
    assert make_params("winclip").temperature == 0.07 == make_params("winclip+").temperature  # WinCLIP's tau


def test_few_shot_adds_the_visual_memory_half(rng):
    ctx = context(rng)
    sup = support_set(rng, 2, ctx)
    m = method_class("winclip").fit(sup, make_params("winclip"))
    assert m.score(sup.features[0]).diagnostics["memory_size"] == 2 * (25 + 16 + 9)
    zero = method_class("winclip").fit(support_set(rng, 0, ctx), make_params("winclip"))
    # a support image is its own nearest memory row at every scale: the few-shot map is 0
    np.testing.assert_allclose(m.score(sup.features[1]).scores, 0.5 * zero.score(sup.features[1]).scores, atol=1e-6)
    q = pack(parts(rng))
    fs = 2 * m.score(q).scores - zero.score(q).scores  # the few-shot map
    patch = (1 - (LAYOUT.split(q).patches @ unit(sup.features[:, :, :32].reshape(-1, 32)).T).max(1)) / 2
    assert (fs > 0).all() and fs.max() <= 1.0
    np.testing.assert_allclose(m.scale_distance(0, LAYOUT.split(q).patches)[0], patch, rtol=1e-5)


@pytest.mark.parametrize("name", ["winclip", "winclip+"])
def test_bank_round_trip_scores_the_same(rng, name):
    ctx = context(rng)
    sup = support_set(rng, 2, ctx)
    params = make_params(name)
    m = method_class(name).fit(sup, params)
    again = method_class(name).from_arrays({k: v.copy() for k, v in m.arrays().items()}, params)
    q = pack(parts(rng))
    np.testing.assert_array_equal(m.score(q).scores, again.score(q).scores)


def test_winclip_plus_needs_support_and_winclip_does_not(rng):
    ctx = context(rng)
    assert method_class("winclip").zero_shot and not method_class("winclip+").zero_shot
    with pytest.raises(EdgeFoctError, match="at least 1"):
        method_class("winclip+").fit(support_set(rng, 0, ctx), make_params("winclip+"))
    assert thresholds.calibrate("winclip", make_params("winclip"), support_set(rng, 0, ctx),
                                np.zeros((0, 1, 25, LAYOUT.dim), np.float32)).rule == "zero-shot-prior"


def test_winclip_plus_runs_patchcore_plus_refinement(rng, monkeypatch):
    # the same functions, not copies
    assert winclip.refine is patchcore_plus.refine and winclip.Prototypes is patchcore_plus.Prototypes
    calls = []
    real = patchcore_plus.sinkhorn_warm

    def counting(*a, **k):
        calls.append(a[0].shape)
        return real(*a, **k)

    monkeypatch.setattr(patchcore_plus, "sinkhorn_warm", counting)
    ctx = context(rng)
    params = make_params("winclip+", {"em_iters": 4})
    m = method_class("winclip+").fit(support_set(rng, 2, ctx), params)
    r = m.score(pack(parts(rng)))
    # 4 E-steps per scale; transport between the n prototypes and the m refined ones of each scale
    n = [round(0.5 * 2 * rows) for rows in (25, 16, 9)]
    assert calls == [(n[0], 25)] * 4 + [(n[1], 16)] * 4 + [(n[2], 9)] * 4
    assert r.diagnostics["refine_marginal_error"] < 1e-3 and r.diagnostics["refine_memory_size"] == n[0]
    assert params.refine_params().lam == 0.1 and make_params("winclip+", preset="mpdd").coreset_ratio == 0.2


def test_outlier_patches_score_above_normal_ones_and_refinement_reconstructs_normal_ones(rng):
    """Normal rows live in a 3-d subspace; a query's outlier rows leave it (Eq. 8's score). The
    refined prototypes reconstruct a new normal combination that no single memory row matches."""
    basis = {d: unit(rng.standard_normal((3, d))) for d in (LAYOUT.patch_dim, LAYOUT.embed_dim)}
    ctx = context(rng)
    sup = support_set(rng, 2, ctx, basis)
    normal = LAYOUT.split(pack(parts(rng, basis=basis))).patches  # (25, 32)
    outlier = unit(rng.standard_normal((5, LAYOUT.patch_dim))).astype(np.float32)
    worst = {}
    for name in ("winclip", "winclip+"):
        m = method_class(name).fit(sup, make_params(name))
        d = m.scale_distance(0, np.vstack([normal[:20], outlier]))[0]
        assert d[20:].min() > 2 * d[:20].max() + 0.05, name
        worst[name] = float(m.scale_distance(0, normal)[0].max())
    assert worst["winclip+"] < 0.01 < worst["winclip"]


def test_fit_bank_refuses_no_support_for_methods_that_need_it(random_backbone):
    bb = Backbone.load(random_backbone)
    with pytest.raises(EdgeFoctError, match="needs at least 1 support image"):
        fit_bank(bb, [], Config().replace(input={"crop": 64}, method={"name": "patchcore"}))
    with pytest.raises(BackboneError, match="export --what clip"):  # a CNN graph has no CLIP side data
        fit_bank(bb, [], Config().replace(input={"crop": 64}, method={"name": "winclip"}))


def test_method_lists_follow_the_backbone(rng):
    from edge_foct.edge_app.evaluation.runner import parse_methods

    cnn = [s.name for s in parse_methods(["all"], {})]
    assert "winclip" not in cnn and "winclip+" not in cnn and "patchcore" in cnn
    assert {"winclip", "winclip+"} <= {s.name for s in parse_methods(["all"], context(rng))}
    with pytest.raises(EdgeFoctError, match="needs a CLIP graph"):
        parse_methods(["patchcore", "winclip+/mpdd"], {})
