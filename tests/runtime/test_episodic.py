"""Episodic memory: selection as DESIGN.md 2.2 says, the guard, compression, state round trip."""

from __future__ import annotations

import numpy as np
import pytest

from edge_foct.runtime import atomic
from edge_foct.runtime.episodic import EpisodicMemory, admissible, best_queries, select_candidates
from edge_foct.runtime.errors import BankError


def test_best_queries_per_memory_row():
    tmap = np.array([[0.1, 0.7, 0.2], [0.5, 0.4, 0.1]])
    j, p = best_queries(tmap)
    assert j.tolist() == [1, 0] and p.tolist() == [0.7, 0.5]


def test_selection_deduplicates_by_query_and_splits_by_the_winning_row():
    # rows: 0 fg, 1 fg, 2 bg, 3 bg, 4 fg
    best_q = np.array([5, 5, 5, 2, 7])
    best_p = np.array([0.3, 0.9, 0.95, 0.4, 0.2])
    row_fg = np.array([True, True, False, False, True])
    fg, bg = select_candidates(best_q, best_p, row_fg, k_fg=5, k_bg=5, allowed=np.ones(10, bool))
    # query 5 is reached best by row 2 (bg, 0.95): it is admitted once, as background
    assert fg.tolist() == [7] and bg.tolist() == [5, 2]


def test_selection_keeps_the_top_k_per_part_by_probability():
    best_q = np.arange(8)
    best_p = np.array([0.1, 0.8, 0.3, 0.9, 0.5, 0.6, 0.2, 0.7])
    row_fg = np.array([True] * 4 + [False] * 4)
    fg, bg = select_candidates(best_q, best_p, row_fg, k_fg=2, k_bg=1, allowed=np.ones(8, bool))
    assert fg.tolist() == [3, 1] and bg.tolist() == [7]


def test_an_empty_part_gives_its_quota_to_the_other():
    best_q, best_p = np.arange(6), np.linspace(1, 0.5, 6)
    fg, bg = select_candidates(best_q, best_p, np.ones(6, bool), k_fg=2, k_bg=3, allowed=np.ones(6, bool))
    assert fg.tolist() == [0, 1, 2, 3, 4] and bg.size == 0
    fg, bg = select_candidates(best_q, best_p, np.zeros(6, bool), k_fg=2, k_bg=1, allowed=np.ones(6, bool))
    assert fg.size == 0 and bg.tolist() == [0, 1, 2]


def test_refused_patches_are_skipped_not_counted():
    best_q, best_p = np.arange(5), np.linspace(1, 0.5, 5)
    allowed = np.array([False, True, False, True, True])
    fg, _ = select_candidates(best_q, best_p, np.ones(5, bool), k_fg=2, k_bg=0, allowed=allowed)
    assert fg.tolist() == [1, 3]


def test_gate_at_image_and_patch_level():
    s = np.array([1.0, 2.0, 5.0])
    assert admissible(s, None).all()  # no gate: the paper's behaviour
    assert not admissible(s, 4.0).any()  # the image scores 5 > 4: nothing enters
    assert admissible(s, 4.0, image_ratio=1e9).tolist() == [True, True, False]
    assert not admissible(np.array([1.0, 3.5]), 4.0, image_ratio=0.8).any()
    assert admissible(s, 10.0, patch_ratio=0.15).tolist() == [True, False, False]


def test_capacity_compresses_each_part_to_a_quarter():
    rng = np.random.default_rng(0)
    mem = EpisodicMemory(dim=4, capacity=100, keep_ratio=0.25)
    mem.add(rng.standard_normal((60, 4)), rng.standard_normal((40, 4)))
    assert (len(mem.fg), len(mem.bg)) == (60, 40)  # at capacity, not over it
    new_fg = rng.standard_normal((8, 4))
    mem.add(new_fg, rng.standard_normal((0, 4)))
    assert (len(mem.fg), len(mem.bg)) == (17, 10)  # round(68 / 4), 40 / 4
    feats, is_fg = mem.rows()
    assert feats.shape == (27, 4) and is_fg.sum() == 17 and feats.dtype == np.float32


def test_state_round_trips_through_an_atomic_npz(tmp_path):
    rng = np.random.default_rng(1)
    mem = EpisodicMemory(dim=3)
    mem.add(rng.standard_normal((5, 3)), rng.standard_normal((2, 3)))
    atomic.write_npz(tmp_path / "episodic.npz", mem.state())
    with np.load(tmp_path / "episodic.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    other = EpisodicMemory(dim=3)
    other.restore(arrays)
    np.testing.assert_array_equal(other.fg, mem.fg)
    np.testing.assert_array_equal(other.bg, mem.bg)
    with pytest.raises(BankError, match="delete"):
        EpisodicMemory(dim=4).restore(arrays)
