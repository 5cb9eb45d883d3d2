"""benchmarks/foct_loco.py: the constant sets stay those of the first sweep whatever FOCT's defaults
become, an older sweep of other constants is refused, and the selection pooled over shots values
picks on the other categories only."""

from __future__ import annotations

import dataclasses

import pytest

from edge_foct.runtime.methods.foct import FoctParams

from ..conftest import load_benchmark


@pytest.fixture(scope="module")
def loco():
    return load_benchmark("foct_loco")


def test_constant_sets_are_pinned_and_current_names_the_defaults(loco):
    assert loco.CONFIGS["defaults"] == loco.BASE and loco.BASE["tau_ratio"] == 1.0
    for name, params in loco.CONFIGS.items():
        assert set(params) == set(loco.BASE), name  # every set spells out every swept constant
    now = dataclasses.asdict(FoctParams())
    assert loco.CONFIGS[loco.CURRENT] == {k: now[k] for k in loco.BASE}


def test_a_sweep_with_other_constants_is_refused(loco):
    moved = {n: {k: v for k, v in p.items() if v != loco.BASE[k]} for n, p in loco.CONFIGS.items()}
    old = {"command": "old", "defaults": dataclasses.asdict(FoctParams()) | {"tau_ratio": 1.0}, "configs": moved}
    loco.check_configs(old)  # the first (2-shot) sweep's format: moved constants over its day's defaults
    with pytest.raises(SystemExit, match="constant set 'defaults'"):
        loco.check_configs({**old, "defaults": dataclasses.asdict(FoctParams())})  # today's tau_ratio 0.5


def _rows(scores: dict[tuple[str, int, str], float]) -> list[dict]:
    """Rows without a mask to judge (every split is the fallback run), image = pixel AUROC."""
    return [{"category": c, "shots": k, "index": i, "config": n, "readings": {},
             "split": {"image_auroc": v, "pixel_auroc": v}, "fallback": {"image_auroc": v, "pixel_auroc": v}}
            for (c, k, n), v in scores.items() for i in range(2)]


def test_pooled_selection_averages_shots_and_leaves_the_category_out(loco):
    cats = ["a", "b", "c", "d", "e"]
    scores = {(c, k, n): 0.8 for c in cats for k in (1, 4) for n in loco.CONFIGS}
    for c in cats:
        scores[(c, 1, "tau_ratio=2")] = 0.85  # best at 1 shot by 0.05 ...
        scores[(c, 4, "tau_ratio=0.5")] = 0.9  # ... the current defaults best at 4 shots by 0.1
    scores[("e", 1, "gates=0.9")] = scores[("e", 4, "gates=0.9")] = 0.99  # best on e alone: not e's pick
    rows = _rows(scores)
    one = loco.select(rows, (1,))
    assert {f["held_out"]: f["config"] for f in one["folds"]} == {c: "tau_ratio=2" for c in cats}
    pooled = loco.select(rows, (1, 4))
    picks = {f["held_out"]: f["config"] for f in pooled["folds"]}
    assert picks["e"] == "tau_ratio=0.5" and picks["a"] == "tau_ratio=0.5"  # (0.8 + 0.9) / 2 > (0.85 + 0.8) / 2
    assert "gates=0.9" not in picks.values()  # on the others' folds e is one of four: (0.99 + 3 x 0.8) / 4 < 0.85
    e = next(f for f in pooled["folds"] if f["held_out"] == "e")
    assert [p["shots"] for p in e["per_shots"]] == [1, 4]
    assert e["per_shots"][0]["image_auroc"] == pytest.approx(0.8) and e["image_auroc"] == pytest.approx(0.85)
    assert e["current_defaults"]["image_auroc"] == pytest.approx(0.85)
    assert pooled["default"]["config"] == "tau_ratio=0.5"
