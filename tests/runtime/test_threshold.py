"""Threshold from normal images only: the fit rule and the guarded stream rule."""

from __future__ import annotations

import numpy as np
import pytest

from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.methods import SupportSet, make_params, method_class
from edge_foct.runtime.threshold import (StreamParams, StreamThreshold, Threshold, calibrate, loo_fit_params,
                                         override)


def support_and_views(rng, k: int, v: int = 3, side: int = 4, d: int = 8):
    q = side * side
    base = rng.standard_normal((q, d)).astype(np.float32)
    feats = np.stack([base + 0.1 * rng.standard_normal((q, d)).astype(np.float32) for _ in range(k)])
    views = feats[:, None] + 0.05 * rng.standard_normal((k, v, q, d)).astype(np.float32)
    return SupportSet(feats, None, (side, side)), views


def test_fit_rule_is_a_patch_quantile_between_its_bounds(rng):
    support, views = support_and_views(rng, k=2)
    t = calibrate("patchcore", make_params("patchcore", {"coreset_ratio": 1.0}), support, views)
    assert t.rule == "loo-patch-q-capped"
    assert len(t.samples) == 2 * 3 and len(t.self_samples) == 2 * 3
    assert t.floor <= t.value <= t.ceiling
    assert t.ceiling == pytest.approx(max(t.samples))  # the former rule is the stream ceiling
    assert t.value <= max(t.samples)
    levels = dict(t.patch_quantiles)
    assert t.value == pytest.approx(min(levels[1 - 1 / 16], max(t.self_samples)))
    assert list(levels.values()) == sorted(levels.values())
    again = Threshold.from_json(t.to_json())
    assert again.value == pytest.approx(t.value) and again.floor == pytest.approx(t.floor)


def test_leave_one_out_quantile_is_capped_by_the_views_against_the_full_memory(rng):
    """Two unlike support images: each left out is far from the other, so the leave-one-out quantile
    is large; new parts like either are near the full memory, as the views are: the cap binds."""
    params = make_params("patchcore", {"coreset_ratio": 1.0})
    q, d, v = 16, 8, 3
    feats = rng.standard_normal((2, q, d)).astype(np.float32)  # two unrelated images
    views = feats[:, None] + 0.05 * rng.standard_normal((2, v, q, d)).astype(np.float32)
    t = calibrate("patchcore", params, SupportSet(feats, None, (4, 4)), views)
    loo_q = dict(t.patch_quantiles)[1 - 1 / q]
    assert t.value == pytest.approx(max(t.self_samples)) and t.value < 0.1 * loo_q
    # two alike images with strong jitter: the views' own maximum is the larger, the quantile holds
    same = np.repeat(feats[:1], 2, axis=0)
    views = same[:, None] + 0.5 * rng.standard_normal((2, v, q, d)).astype(np.float32)
    t = calibrate("patchcore", params, SupportSet(same, None, (4, 4)), views)
    assert t.value == pytest.approx(dict(t.patch_quantiles)[1 - 1 / q]) and t.value < max(t.self_samples)


def test_one_shot_uses_self_views(rng):
    support, views = support_and_views(rng, k=1)
    t = calibrate("patchcore", make_params("patchcore"), support, views)
    assert t.rule == "self-views-max" and t.value == pytest.approx(max(t.self_samples))
    assert t.ceiling == pytest.approx(2 * t.value)


@pytest.mark.parametrize("method", ["patchcore+", "vanilla"])
def test_reconstruction_methods_keep_the_memory_size_when_leaving_one_out(rng, method, monkeypatch):
    """K = 2: each leave-one-out memory (1 image) has the full memory's rows (ratio x 2)."""
    support, views = support_and_views(rng, k=2, side=8)
    params = make_params(method)
    cls = method_class(method)
    rows, real_fit = [], cls.fit
    monkeypatch.setattr(cls, "fit", classmethod(lambda c, s, p: rows.append(
        (s.features.shape[0], len(real_fit(s, p).arrays()["prototypes" if method == "patchcore+" else "memory"])))
        or real_fit(s, p)))
    calibrate(method, params, support, views)
    full, loo = rows[0], rows[1:]
    assert full[0] == 2 and [k for k, _ in loo] == [1, 1] and all(n == full[1] for _, n in loo)
    assert loo_fit_params(cls, params, 4).coreset_ratio == pytest.approx(params.coreset_ratio * 4 / 3)
    assert loo_fit_params(method_class("patchcore"), make_params("patchcore"), 2) == make_params("patchcore")


def start(value=1.0, floor=0.5, ceiling=2.0) -> Threshold:
    return Threshold(value, "loo-patch-q", floor=floor, ceiling=ceiling)


def test_stream_rule_calibrates_from_the_first_frames_then_holds(rng):
    scores = 0.6 * np.exp(0.05 * rng.standard_normal(400))
    logs = np.log(scores[:50])
    med = np.median(logs)
    level = np.exp(med + 3 * 1.4826 * np.median(np.abs(logs - med)))  # the line's level, k = 3
    assert 0.6 < level < 0.9
    # the line's level alone (bank weight 0), and by default its geometric mean with the bank's 1.0
    for weight, expected in ((0.0, level), (0.5, np.sqrt(level * 1.0)), (0.25, level ** 0.75)):
        st = StreamThreshold(start(), StreamParams(frames=50, k=3.0, bank_weight=weight))
        values = [st.update(float(s)) for s in scores]
        assert values[48] == 1.0  # calibrating: the bank's value judges
        assert values[49] == pytest.approx(expected)
        assert values[-1] == values[49]  # a stream of good parts does not lift it: it holds
    assert StreamParams().bank_weight == 0.5 and StreamParams().k == 0.75  # STREAM_BANK_WEIGHT, STREAM_K


def test_stream_k_follows_the_support_size():
    """k per support size (1, 2-3, 4+ images), as stream_rule.py chose it; unknown: STREAM_K."""
    from edge_foct.runtime.threshold import STREAM_K, STREAM_K_BY_SUPPORT, stream_k

    assert [stream_k(k) for k in (1, 2, 3, 4, 16)] == [0.25, 0.5, 0.5, 0.75, 0.75]
    assert stream_k(None) == STREAM_K == STREAM_K_BY_SUPPORT[4]


def test_stream_rule_recovers_from_a_threshold_that_starts_too_low(rng):
    """Issue 12: every good part scored above the bank's threshold (4000 of 4000 flagged) and the
    former rule, fed only frames judged good, never moved. Calibration reads every frame."""
    st = StreamThreshold(start(value=1.96, floor=1.0, ceiling=3.0), StreamParams(frames=50))
    good = rng.uniform(2.31, 2.90, 4000)
    flags = []
    for s in good:
        flags.append(s > st.value)
        st.update(float(s))
    assert all(flags[:50]) and st.calibrated
    # the bank's 1.96 sits below the frames' median: it does not know this line and is left out (the
    # geometric mean with it would still flag most parts); the level alone, k = 1 robust sigma
    # (STREAM_K_ALONE, chosen on replayed streams): about 1 in 8 of a flat spread stays flagged
    assert np.mean(flags[50:]) < 0.2 and st.value > 2.7
    logs = np.log(good[:50])
    med = np.median(logs)
    assert st.value == pytest.approx(np.exp(med + 1.0 * 1.4826 * np.median(np.abs(logs - med))))


def test_stream_rule_is_not_pulled_up_by_defects_nor_loops(rng):
    good = 0.6 * np.exp(0.05 * rng.standard_normal(60))
    clean = StreamThreshold(start(), StreamParams(frames=60))
    for s in good:
        clean.update(float(s))
    dirty = StreamThreshold(start(), StreamParams(frames=60))
    mixed = good.copy()
    mixed[::20] = 5.0  # 3 defects among the calibration frames
    for s in mixed:
        dirty.update(float(s))
    assert dirty.value == pytest.approx(clean.value, rel=0.05)
    for _ in range(6):  # six loops of the same good frames, then missed defects: it holds
        for s in list(good) + [0.9 * dirty.value] * 10:
            dirty.update(float(s))
    assert dirty.value == pytest.approx(clean.value, rel=0.05)


def test_stream_rule_floor_and_drift_warning(rng):
    st = StreamThreshold(start(), StreamParams(frames=20, bank_weight=0.0))
    for s in 0.01 * rng.random(20):  # an unusually quiet start cannot go below the floor
        st.update(float(s))
    assert st.value == 0.5 and st.drift_warning is None
    quiet = StreamThreshold(start(), StreamParams(frames=20))  # by default: the floor's mean with the bank's 1.0
    for s in 0.01 * rng.random(20):
        quiet.update(float(s))
    assert quiet.value == pytest.approx(np.sqrt(0.5 * 1.0))
    for s in 0.8 + 0.1 * rng.random(200):  # then the line drifts: most frames flagged
        st.update(float(s))
    assert "stream drifts" in st.drift_warning and "re-calibrate" in st.drift_warning


def test_episodic_gate_follows_the_stream_down_but_never_above_the_learnt_threshold(rng):
    st = StreamThreshold(start(), StreamParams(frames=20))
    for s in rng.uniform(1.0, 2.0, 20):  # a line scoring above the support lifts the verdict threshold
        st.update(float(s))
    assert st.value > 1.0 and st.gate == 1.0
    st = StreamThreshold(start(), StreamParams(frames=20))
    for s in 0.6 + 0.02 * rng.standard_normal(20):  # a tight stream lowers both
        st.update(float(s))
    assert st.value < 1.0 and st.gate == st.value


def test_stream_state_round_trip(rng):
    st = StreamThreshold(start(), StreamParams(frames=32))
    for s in 0.6 + 0.05 * rng.random(40):
        st.update(float(s))
    again = StreamThreshold(start(), StreamParams(frames=32))
    again.restore(st.state())
    assert again.accepted == 32 and again.calibrated and again.value == pytest.approx(st.value)
    half = StreamThreshold(start(), StreamParams(frames=32))
    half.restore({"scores": np.array([0.5, 0.6])})
    assert not half.calibrated and half.value == 1.0
    with pytest.raises(ValueError, match="non-finite"):
        again.restore({"scores": np.array([0.5, np.nan])})


def test_stream_rule_needs_bounds():
    with pytest.raises(EdgeFoctError, match="--fixed-threshold"):
        StreamThreshold(override(1.0))


def test_nan_and_inf_thresholds_are_refused_and_nan_scores_are_defective():
    from edge_foct.runtime.threshold import finite_threshold, is_defective

    for bad in (float("nan"), float("inf"), -float("inf"), "nan", "abc", None):
        with pytest.raises(EdgeFoctError):
            override(bad)
        with pytest.raises(EdgeFoctError):
            Threshold.from_json({"value": bad, "rule": "user"})
    assert finite_threshold("2.5") == 2.5
    assert is_defective(float("nan"), 1.0) and is_defective(float("inf"), 1.0)
    assert is_defective(1.01, 1.0) and not is_defective(1.0, 1.0) and not is_defective(0.5, 1.0)


def test_stream_rule_ignores_non_finite_scores():
    st = StreamThreshold(Threshold(1.0, "x", floor=0.5, ceiling=2.0), StreamParams(frames=3))
    for s in (float("nan"), float("inf"), float("nan")):
        st.update(s)
    assert st.accepted == 0 and st.value == 1.0


def test_calibrate_streams_the_views_and_bounds_the_fits(rng, monkeypatch):
    """Issue 16 item 1: K leave-one-out fits over all K x V views held at once grew like K^3 in time
    and K x V x Q x D in memory. Now each image's views are asked for once (streamed), at most
    MAX_FOLDS + 1 fits run, and progress is reported per support image."""
    from edge_foct.runtime import threshold as thr_mod
    from edge_foct.runtime.methods.patchcore import PatchCore

    k, v = 12, 2
    support, views = support_and_views(rng, k=k, v=v)
    asked, fits, ticks = [], [], []
    real_fit = PatchCore.fit.__func__
    monkeypatch.setattr(PatchCore, "fit", classmethod(lambda cls, s, p: (fits.append(s.features.shape[0]),
                                                                         real_fit(cls, s, p))[1]))
    t = calibrate("patchcore", make_params("patchcore"), support, lambda i: (asked.append(i), views[i])[1],
                  progress=ticks.append)
    assert sorted(asked) == list(range(k))  # every image's views computed exactly once
    assert len(fits) == thr_mod.MAX_FOLDS + 1 and sum(ticks) == k
    assert len(t.samples) == k * v and t.floor <= t.value <= t.ceiling
    # up to MAX_FOLDS images: the same leave-one-out as before, callable or array
    small, sviews = support_and_views(rng, k=4, v=v)
    a = calibrate("patchcore", make_params("patchcore"), small, sviews)
    b = calibrate("patchcore", make_params("patchcore"), small, lambda i: sviews[i])
    assert a.value == b.value and a.samples == b.samples


def test_ensemble_rule_is_the_geometric_mean_of_its_members():
    """Issue 12, fourth pass: ``geo-loo-cal`` averages loo-max-cal and blend-loo (log scale), each with
    its own constants, instead of picking one of them per support size."""
    from dataclasses import replace

    from edge_foct.runtime.threshold import ENSEMBLES, RULES, SHIPPED_RULES, apply_rule, finalise

    base = Threshold(1.0, "loo-patch-q-capped", samples=(2.0, 2.5), self_samples=(1.0, 0.5), floor=0.5, ceiling=2.5)
    cal = [1.0, 1.1, 1.2, 1.3, 2.0, 1.0, 1.1, 1.2]
    assert ENSEMBLES["geo-loo-cal"] == ("loo-max-cal", "blend-loo")
    assert RULES["geo-loo-cal"].needs_calibration and RULES["geo-loo-cal"].min_support == 2
    one, two = apply_rule("loo-max-cal", (0.1, 0.4), base, cal), apply_rule("blend-loo", (-0.2, 0.7), base, cal)
    assert one != pytest.approx(two)  # else the mean would not be tested
    g = apply_rule("geo-loo-cal", (0.1, 0.4, -0.2, 0.7), base, cal)
    assert g == pytest.approx(np.sqrt(one * two)) and min(one, two) < g < max(one, two)
    # the members' order is the constants' order; without calibration images both fall back as they do alone
    assert apply_rule("geo-loo-cal", (-0.2, 0.7, 0.1, 0.4), base, cal) != pytest.approx(g)
    assert apply_rule("geo-loo-cal", (0.1, 0.4, 0.1, 0.4), base, []) == pytest.approx(
        apply_rule("support-shift", (0.1, 0.4), base))
    with pytest.raises(EdgeFoctError, match="4 constants"):
        apply_rule("geo-loo-cal", (0.1, 0.4), base, cal)
    # geo-loo (4+ support images, no calibration images): loo-max and loo-median, by hand
    shift = 2.25 / 0.75  # median leave-one-out / median self-view score
    assert ENSEMBLES["geo-loo"] == ("loo-max", "loo-median") and not RULES["geo-loo"].needs_calibration
    assert apply_rule("loo-median", (0.2, 0.5), base) == pytest.approx(2.25 * 1.2 * shift ** 0.5)
    assert apply_rule("geo-loo", (-0.1, 0.0, 0.2, 0.0), base) == pytest.approx(np.sqrt(2.5 * 0.9 * 2.25 * 1.2))
    four = replace(base, samples=(2.0, 2.5, 1.5, 3.0))
    t = finalise(four, 4)
    assert (t.rule, t.constants) == SHIPPED_RULES[4]["none"] == ("geo-loo", (-0.1, 0.0, 0.15, 0.0))
    assert t.value == pytest.approx(np.sqrt(3.0 * 0.9 * 2.25 * 1.15))


def test_line_views_are_scored_against_the_same_memories(rng):
    """The fourth pass's measurement hook (benchmarks/threshold_loco.py add-line): ``calibrate(line=...)``
    scores each support image's line views against the full memory and against the memory it was left
    out of, without changing the threshold; a bank without them reads back with none."""
    from edge_foct.runtime.augment import jitter_views, line_views

    support, views = support_and_views(rng, k=3, v=2)
    params = make_params("patchcore")
    line = views + 0.2  # (K, L, Q, D): any other features
    plain = calibrate("patchcore", params, support, views)
    t = calibrate("patchcore", params, support, views, line=line)
    assert t.value == plain.value and t.samples == plain.samples and plain.line_samples == ()
    assert len(t.line_samples) == len(t.line_self_samples) == 3 * 2
    assert min(t.line_samples) >= min(t.line_self_samples)  # the full memory holds the image itself
    one = calibrate("patchcore", params, SupportSet(support.features[:1], None, support.grid), views[:1],
                    line=line[:1])
    assert one.line_samples == () and len(one.line_self_samples) == 2
    back = Threshold.from_json(t.to_json())
    assert back.line_samples == pytest.approx(t.line_samples)
    assert "line_samples" not in plain.to_json() and Threshold.from_json(plain.to_json()).line_samples == ()  # banks
    img = rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)
    a, b = line_views(img, 3, seed=5), line_views(img, 3, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and a[0].shape == img.shape
    assert not np.array_equal(a[0], jitter_views(img, 1, seed=5)[0])  # stronger than the threshold's jitter


def test_fit_defaults_are_bounded():
    from pathlib import Path

    from edge_foct.edge_app.fitting import DEFAULT_MAX_SHOTS, pick_support
    from edge_foct.runtime.fit import MAX_TOTAL_VIEWS, views_per_image

    paths = [Path(f"{i:03d}.png") for i in range(100)]
    picked = pick_support(paths, None, 0)
    assert len(picked) == DEFAULT_MAX_SHOTS and picked == sorted(picked)
    assert len(pick_support(paths[:5], None, 0)) == 5
    assert views_per_image(8, 2) == 8 and views_per_image(8, 16) * 16 <= MAX_TOTAL_VIEWS
    assert views_per_image(8, 100) == 1


def test_shipped_rules_per_support_size_and_calibration():
    from dataclasses import replace

    from edge_foct.runtime.threshold import (FAMILIES, RULES, SHIPPED_RULES, apply_rule, family_for, finalise,
                                             shipped_rule)

    for k, bucket in SHIPPED_RULES.items():
        assert not RULES[bucket["none"][0]].needs_calibration and RULES[bucket["cal"][0]].needs_calibration
    assert shipped_rule(3, 0) == SHIPPED_RULES[2]["none"] and shipped_rule(16, 8) == SHIPPED_RULES[4]["cal"]
    assert shipped_rule(2, 3) == SHIPPED_RULES[2]["none"]  # too few calibration images: not used
    base = Threshold(1.0, "loo-patch-q-capped", samples=(2.0, 2.5), self_samples=(1.0, 0.5), floor=0.5, ceiling=2.5)
    shift = 2.25 / 0.75  # loo median / self median
    # the formulas of every family, by hand
    assert apply_rule("support-shift", (0.1, 0.5), base) == pytest.approx(1.0 * 1.1 * shift ** 0.5)
    assert apply_rule("loo-max", (0.1, 0.5), base) == pytest.approx(2.5 * 1.1 * shift ** 0.5)
    cal = [1.0, 1.1, 1.2, 1.3, 2.0, 1.0, 1.1, 1.2]
    med = np.median(cal)
    assert apply_rule("cal-spread", (0.1, 0.5), base, cal) == pytest.approx(med * 1.1 * (2.0 / med) ** 1.5)
    assert apply_rule("blend", (0.1, 0.3), base, cal) == pytest.approx(1.1 * (1.0 * shift) ** 0.7 * 2.0 ** 0.3)
    assert apply_rule("blend-loo", (0.1, 0.3), base, cal) == pytest.approx(1.1 * 2.5 ** 0.7 * 2.0 ** 0.3)
    assert apply_rule("blend", (0.1, 0.3), base, []) == apply_rule("support-shift", (0.1, 0.3), base)
    # loo-max moved to the calibration images' level: median calibration / median leave-one-out score
    assert apply_rule("loo-max-cal", (0.1, 0.5), base, cal) == pytest.approx(1.1 * 2.5 * (med / 2.25) ** 0.5)
    assert apply_rule("loo-max-cal", (0.1, 0.0), base, cal) == pytest.approx(apply_rule("loo-max", (0.1, 0.0), base))
    a, w = np.array([0.0, 0.1]), np.array([0.5, 1.0])  # a grid of constants at once, as threshold_loco searches it
    assert np.allclose(apply_rule("loo-max-cal", (a, w), base, cal), [2.5 * (med / 2.25) ** 0.5, 1.1 * 2.5 * med / 2.25])
    assert apply_rule("loo-max-cal", (0.1, 0.5), base, []) == apply_rule("support-shift", (0.1, 0.5), base)
    assert RULES["loo-max-cal"].min_support == 2 and RULES["blend-loo"].min_support == 1
    # what fit ships: candidate families with the constants of SHIPPED_RULES, each defined at its support size
    for k, bucket in SHIPPED_RULES.items():
        assert bucket["none"][0] == FAMILIES[k]["none"] and bucket["cal"][0] == FAMILIES[k]["cal"]
        assert all(k >= RULES[r].min_support for r, _ in bucket.values())  # defined at that support size
    assert SHIPPED_RULES[2]["cal"] == ("geo-loo-cal", (0.0, 0.7, -0.1, 0.5))
    assert SHIPPED_RULES[1]["cal"][0] == "blend-loo"
    # one family per support size and calibration (none for K = 1 reads a leave-one-out)
    assert [family_for(k, 8) for k in (1, 2, 3, 4, 16)] == ["blend-loo", "geo-loo-cal", "geo-loo-cal", "geo-loo-cal",
                                                            "geo-loo-cal"]
    assert [family_for(k, 0) for k in (1, 2, 3, 4, 16)] == ["loo-max", "loo-max", "loo-max", "geo-loo", "geo-loo"]
    assert all(shipped_rule(k, n)[0] == family_for(k, n) for k in (1, 2, 3, 4, 9) for n in (0, 8))
    rule, const = SHIPPED_RULES[2]["none"]
    assert finalise(base, 2).value == pytest.approx(apply_rule(rule, const, base))
    t = finalise(base, 2, cal)
    rule, const = SHIPPED_RULES[2]["cal"]
    assert t.rule == rule and t.value == pytest.approx(apply_rule(rule, const, base, cal))
    # the geometric mean of loo-max-cal (0, 0.7) and blend-loo (-0.1, 0.5), by hand
    assert t.value == pytest.approx(np.sqrt(1.0 * 2.5 * (med / 2.25) ** 0.7 * 0.9 * 2.5 ** 0.5 * 2.0 ** 0.5))
    assert t.base == 1.0 and t.floor <= t.value <= t.ceiling and t.constants == const
    # 8 calibration images, at most 2 above the threshold: reliable; without them the disagreeing supports are said
    assert finalise(base, 2, cal).warning is None
    assert "disagree" in finalise(base, 2).warning and "disagree" not in finalise(replace(base, samples=(1.0, 0.9)), 2).warning
    with pytest.raises(EdgeFoctError, match="NaN"):
        finalise(base, 2, [1.0, float("nan"), 1.0, 1.0])


def test_budget_rule_moves_the_shipped_rule_to_the_budget():
    """--max-false-alarms: the shipped rule's threshold x (1 + shift of its support size and calibration)
    x exp((z(1 - budget) - z(0.95)) x sigma): at the reference budget the shift alone; a larger budget,
    a lower threshold; a bad budget is refused."""
    from statistics import NormalDist

    from edge_foct.runtime.threshold import (BUDGET_REF, BUDGET_SHIFTS, BUDGET_SIGMA, apply_rule, budget_shift,
                                             budget_threshold, finalise, shipped_rule)

    base = Threshold(1.0, "loo-patch-q-capped", samples=(2.0, 2.5), self_samples=(1.0, 0.5), floor=0.5, ceiling=2.5)
    cal = [1.0, 1.1, 1.2, 1.3, 2.0, 1.0, 1.1, 1.2]
    for k, cals in ((1, []), (2, []), (2, cal), (3, cal[:4]), (4, []), (9, cal)):
        rule, const = shipped_rule(k, len(cals))
        learnt = apply_rule(rule, const, base, cals)
        t = finalise(base, k, cals, max_false_alarms=BUDGET_REF)
        shift = BUDGET_SHIFTS[1 if k == 1 else 2 if k < 4 else 4]["cal" if len(cals) >= 4 else "none"]
        assert shift == budget_shift(k, len(cals))
        assert t.value == pytest.approx(learnt * (1 + shift)) and t.rule == "budget-0.05"
        assert t.constants == (BUDGET_REF, shift, BUDGET_SIGMA, *const)  # the budget's and the rule's, recorded
        z = NormalDist().inv_cdf
        t1 = finalise(base, k, cals, max_false_alarms=0.01)
        assert t1.value == pytest.approx(learnt * (1 + shift) * np.exp((z(0.99) - z(0.95)) * BUDGET_SIGMA))
        assert finalise(base, k, cals, max_false_alarms=0.2).value < t.value < t1.value
    assert float(budget_threshold(0.05, 2.0, 0.5, 0.3)) == pytest.approx(3.0)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(EdgeFoctError, match="budget"):
            finalise(base, 2, max_false_alarms=bad)
