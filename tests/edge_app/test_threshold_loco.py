"""benchmarks/threshold_loco.py verdict: a category's rule is chosen without its own scores, and each
gap is reported with its standard error over the support draws."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from ..conftest import load_benchmark

CATS = ("a", "b", "c", "d", "e")


@pytest.fixture(scope="module")
def loco():
    return load_benchmark("threshold_loco")


def test_gap_se_is_the_spread_of_the_splits_over_the_categories(loco):
    """Per category the split's gap is the mean over the methods' rows (same support draw); the SE of
    the mean over C categories is sqrt(sum_c var_c / n_c) / C (var with ddof 1)."""
    per = {"a": [{"splits_of": [0, 1, 2], "gap_per_split": {0: [0.1, 0.2, 0.3]}},
                 {"splits_of": [2, 0, 1], "gap_per_split": {0: [0.5, 0.3, 0.2]}}],  # splits 0, 1, 2: .2, .2, .4
           "b": [{"splits_of": [0, 1], "gap_per_split": {0: [0.0, 0.0]}}]}
    want = np.sqrt(np.var([0.2, 0.2, 0.4], ddof=1) / 3 + 0.0) / 2
    assert loco.gap_se(per, 0) == pytest.approx(want)
    assert loco.gap_se({"b": per["b"]}, 0) == 0.0  # identical splits: no spread
    assert loco.gap_se({"c": [{"splits_of": [0], "gap_per_split": {0: [0.7]}}]}, 0) == 0.0  # one split: none known


def _cache(root: Path, shift_e: float = 0.0) -> Path:
    """Five categories x one method x 2 shots x 3 splits of synthetic runs: good test scores ~ the
    support's leave-one-out level x a per-category line shift, defects above; ``shift_e`` moves
    category e's test scores only (never its support or calibration scores)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    labels = [False] * 20 + [True] * 10
    for ci, cat in enumerate(CATS):
        runs = []
        for split in range(3):
            loo = rng.uniform(1.0, 1.3, 16)
            self_ = loo * 0.8
            line = 1.1 + 0.05 * ci
            good = rng.lognormal(np.log(line), 0.1, 20)
            bad = rng.lognormal(np.log(line * 1.6), 0.15, 10)
            scores = np.concatenate([good, bad]) * (np.exp(shift_e) if cat == "e" else 1.0)
            cal = rng.lognormal(np.log(line * 0.95), 0.1, 16)
            thr = {"value": float(self_.max()), "rule": "test", "samples": loo.tolist(),
                   "self_samples": self_.tolist(), "floor": 0.5, "ceiling": 5.0}
            runs.append({"shots": 2, "split": split, "scores": scores.tolist(), "cal": cal.tolist(),
                         "threshold": thr})
        (root / f"{cat}__patchcore.json").write_text(json.dumps({"category": cat, "method": "patchcore",
                                                                 "labels": labels, "runs": runs}))
    meta = {"backbone": {"id": "synthetic", "feature_dim": 8}, "size": 64, "splits": 3,
            "machine": {"cpu": "test"}, "cpu_flags": []}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def _verdict(loco, cache: Path, out: Path) -> dict:
    args = argparse.Namespace(cache=cache, extra=[], unseen=None, extra_unseen=[], budget=0.05, out=out)
    loco.verdict(args)
    return {r["category"]: r for r in json.loads((out / "verdict.json").read_text())["rows"]}


def test_verdict_chooses_each_categorys_rule_on_the_other_four(loco, tmp_path, capsys):
    """Moving category e's test scores changes e's false alarms and misses, never the rule e is judged
    by (chosen on a-d); the other categories' rules may move (e is among their four)."""
    base = _verdict(loco, _cache(tmp_path / "c0"), tmp_path / "v0")
    moved = _verdict(loco, _cache(tmp_path / "c1", shift_e=0.4), tmp_path / "v1")
    for n in (0, 8):
        assert moved["e"][f"rule{n}"] == base["e"][f"rule{n}"]
        assert moved["e"][f"budget_shift{n}"] == base["e"][f"budget_shift{n}"]
    assert moved["e"]["cal0"] != base["e"]["cal0"]  # e's own rates did move
    assert moved["e"]["budget_sigma"] == base["e"]["budget_sigma"]
    row = base["a"]
    assert row["held_out"] == "LOCO" and row["splits_of"] == [0, 1, 2]
    for n in ("0", "8"):  # JSON keys; the gap of each split is its (false alarms + misses) minus the oracle's
        assert len(row["gap_per_split"][n]) == 3
        assert np.mean(row["gap_per_split"][n]) == pytest.approx(sum(row[f"cal{n}"]) - sum(row["oracle"]))
    md = (tmp_path / "v0" / "verdict.md").read_text()
    assert "gap 0 cal (+- SE)" in md and " +- " in md.split("| 2 | all |")[1].splitlines()[0]
