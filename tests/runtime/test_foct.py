"""ct / oct / foct as methods: registry, presets, memory, edge path, online update, guard, state."""

from __future__ import annotations

import numpy as np
import pytest

from edge_foct.runtime.bank import Bank
from edge_foct.runtime.methods import METHODS, SupportSet, make_params, method_class
from edge_foct.runtime.methods import foct as foct_module

DIAG_KEYS = {"concentration", "uniform", "ct_loss", "steps", "admitted", "admitted_fg", "admitted_bg", "memory_size"}


def support(k=2, q=100, d=8, fg_fraction=0.4, seed=0) -> SupportSet:
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((k, q, d)).astype(np.float32)
    fg = np.zeros((k, q), bool)
    fg[:, : int(q * fg_fraction)] = True
    feats[fg] += 3.0  # foreground patches form their own cluster
    return SupportSet(feats, fg, (10, q // 10))


def test_registry_flags_and_presets():
    assert {"ct", "oct", "foct"} <= set(METHODS)
    assert not METHODS["ct"].online and METHODS["oct"].online and METHODS["foct"].online
    assert METHODS["foct"].uses_foreground and not METHODS["oct"].uses_foreground
    paper = make_params("foct", preset="paper")
    assert (paper.navigator_init, paper.hidden1, paper.hidden2, paper.steps, paper.lr, paper.two_fits) == \
        ("torch", 512, 256, 100, 2e-4, True)
    edge = make_params("foct", {"tau_ratio": 0.2}, preset="edge")
    assert (edge.navigator_init, edge.steps, edge.two_fits, edge.tau_ratio) == ("soft_nn", 0, False, 0.2)


def test_foreground_aware_memory_keeps_fg_and_bg_apart():
    s = support()
    p = make_params("foct", {"alpha": 0.10, "beta": 0.075})
    m = METHODS["foct"].fit(s, p)
    assert m.memory_fg.sum() == 8 and (~m.memory_fg).sum() == 9  # 10 % of 80 fg, 7.5 % of 120 bg
    np.testing.assert_array_equal(m.arrays()["support_mask_used"], [True, True])
    plain = METHODS["oct"].fit(s, p)  # oct: one part, plain coreset at alpha
    assert plain.memory_fg.all() and len(plain.memory) == 20


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.97, 1.0])
def test_unusable_masks_put_every_patch_in_one_part(fraction):
    m = METHODS["foct"].fit(support(fg_fraction=fraction), make_params("foct"))
    assert m.memory_fg.all() and len(m.memory) == 20
    assert not m.arrays()["support_mask_used"].any()


def test_edge_with_a_small_tau_is_patchcore_and_runs_no_mlp(monkeypatch):
    def no_mlp(*a, **k):
        raise AssertionError("the edge path with steps=0 must not run the navigator")

    monkeypatch.setattr(foct_module.navigator, "forward", no_mlp)
    s = support(fg_fraction=1.0)
    q = np.random.default_rng(1).standard_normal((100, 8)).astype(np.float32)
    pc = METHODS["patchcore"].fit(s, make_params("patchcore", {"coreset_ratio": 0.1}))
    ct = METHODS["ct"].fit(s, make_params("ct", {"tau_ratio": 1e-4}, preset="edge"))
    rows = lambda a: a[np.lexsort(a.T)]  # noqa: E731  (the same coreset, in any order)
    np.testing.assert_array_equal(rows(ct.memory), rows(pc.memory))
    r = ct.score(q)
    np.testing.assert_allclose(r.scores, pc.score(q).scores, rtol=1e-4)
    assert r.diagnostics["concentration"] > 0.99 and DIAG_KEYS <= set(r.diagnostics)


@pytest.mark.parametrize("name", ["ct", "oct", "foct"])
def test_paper_procedure_runs_two_fits_when_online(name):
    p = make_params(name, {"hidden1": 6, "hidden2": 3, "steps": 4}, preset="paper")
    m = METHODS[name].fit(support(q=40, d=6), p)
    m.set_gate(1e9)
    r = m.score(np.random.default_rng(2).standard_normal((40, 6)).astype(np.float32))
    assert DIAG_KEYS <= set(r.diagnostics)
    assert r.diagnostics["steps"] == (8 if METHODS[name].online else 4)
    assert r.diagnostics["uniform"] <= r.diagnostics["concentration"] <= 1.0
    assert (r.diagnostics["admitted"] > 0) == METHODS[name].online


def test_online_memory_grows_only_on_update_and_respects_capacity():
    m = METHODS["foct"].fit(support(), make_params("foct", {"capacity": 50}))
    m.set_gate(None)
    rng = np.random.default_rng(3)
    q = rng.standard_normal((100, 8)).astype(np.float32)
    r = m.score(q, update=False)
    assert r.diagnostics["admitted"] == 0 and len(m.episodic) == 0
    sizes = []
    for _ in range(4):
        r = m.score(rng.standard_normal((100, 8)).astype(np.float32))
        assert r.diagnostics["admitted"] == r.diagnostics["admitted_fg"] + r.diagnostics["admitted_bg"] > 0
        assert len(set(r.diagnostics["admitted_patches"])) == r.diagnostics["admitted"]
        sizes.append(len(m.episodic))
    assert max(sizes) <= 50 and sizes[0] < sizes[1]


def test_guard_keeps_a_defect_out_of_the_memory():
    s = support(fg_fraction=1.0)
    m = METHODS["oct"].fit(s, make_params("oct"))
    rng = np.random.default_rng(4)
    normal = s.features[0] + 0.05 * rng.standard_normal(s.features[0].shape).astype(np.float32)
    m.set_gate(float(m.score(normal, update=False).scores.max()) * 1.5)
    defect = normal.copy()
    defect[:10] += 40.0  # ten far-away patches
    r = m.score(defect)
    assert r.scores.max() > m.gate and r.diagnostics["admitted"] == 0 and len(m.episodic) == 0
    # image gate off: the patch level alone still refuses the defect's patches
    m2 = METHODS["oct"].fit(s, make_params("oct", {"gate_image_ratio": 1e9, "k_fg": 100, "k_bg": 0}))
    m2.set_gate(float(np.sort(m2.score(defect, update=False).scores)[-11]))
    r2 = m2.score(defect.copy())
    admitted = m2.episodic.rows()[0]
    assert r2.diagnostics["admitted"] > 0
    assert np.abs(admitted[:, None, :] - defect[None, :10]).sum(-1).min() > 1.0  # no defect patch inside


def test_bank_arrays_and_episodic_state_round_trip(tmp_path):
    s = support()
    p = make_params("foct")
    m = METHODS["foct"].fit(s, p)
    m.set_gate(None)
    rng = np.random.default_rng(5)
    for _ in range(3):
        m.score(rng.standard_normal((100, 8)).astype(np.float32))
    bank = Bank({"method": {"name": "foct", "params": {}}}, m.arrays())
    again = bank.make_method()
    again.restore_episodic(m.episodic_state())
    q = rng.standard_normal((100, 8)).astype(np.float32)
    a, b = m.score(q, update=False), again.score(q, update=False)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.diagnostics["memory_size"] == b.diagnostics["memory_size"] > len(m.memory)
    assert method_class("ct").fit(s, make_params("ct")).episodic_state() == {}


def test_bad_parameters_are_refused_with_the_fix():
    from edge_foct.runtime.errors import EdgeFoctError

    with pytest.raises(EdgeFoctError, match="select_map"):
        make_params("foct", {"select_map": "sideways"})
    with pytest.raises(EdgeFoctError, match="tau_ratio"):
        make_params("ct", {"tau_ratio": 0.0})
