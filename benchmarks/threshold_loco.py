"""Threshold rules chosen leave-one-category-out (LOCO), with 0/4/8/16 calibration images.

Two stages, so the rule search never recomputes a feature:

``collect``: for every category of ``--data``, method, shots and split (the support draws of
`edge-foct eval --seed 0`), fit the method, run ``runtime.threshold.calibrate`` (every statistic
the rules read), score up to 16 calibration images (``train/good`` images not in the support,
drawn per split, as `edge-foct fit --calibrate DIR` would score them) and stream the test set
(online methods learn with their gate at the bank's fit-time threshold). One ``.npz`` per
category and method under ``--cache``: raw scores only, no labels used anywhere but the report.

``report``: for each held-out category, each rule family of ``runtime.threshold.RULES`` and each
value of its constant is scored on the **other four** categories (mean false alarms + misses over
methods, shots 2 and 4 and splits, with a penalty on any category above 25 % false alarms); the
best (rule, constant) is then applied to the held-out category. The table reports, per category and
calibration size, false alarms / misses at that threshold beside the oracle (the best threshold on
the test set itself) and the rule in force. Numbers on a category are never from a rule it helped
choose. Also: the false-alarm budget rule (``--max-false-alarms``) per category, and the rule
chosen on all five categories (the one `edge-foct fit` ships).

``nested`` (issue 12, fourth pass): the family chosen on the other four too, by a criterion fixed
a priori (``flat`` in-sample objective, ``inner`` leave-one-category-out on the four, ``minimax``),
or no pick at all (``ensemble``: the geometric mean of the families, each with its own constants
chosen on the other four, as ``runtime.threshold.ENSEMBLES`` ships it). ``add-line`` adds the
support's line views' scores (``runtime.augment.line_views``, ``calibrate(line=...)``) to the runs of
an existing cache (``collect`` records them for new caches).

    python benchmarks/threshold_loco.py collect --backbone effnet-expand-tf.onnx
    python benchmarks/threshold_loco.py report
    python benchmarks/threshold_loco.py nested --criteria flat inner:1 minimax ensemble --sets blend-loo,loo-max-cal
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge_foct.edge_app.datasets.mvtec import find_categories
from edge_foct.edge_app.evaluation.protocol import FeatureStore, draw_split, limit_test_set
from edge_foct.edge_app.machine_info import machine_info
from edge_foct.edge_app.evaluation.metrics import oracle_threshold
from edge_foct.runtime import threshold as thresholds
from edge_foct.runtime.augment import LINE_SEED  # line views of support image i: seed LINE_SEED + i
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.foreground import make_foreground
from edge_foct.runtime.fit import mask_to_grid
from edge_foct.runtime.image_io import read_image
from edge_foct.runtime.methods import SupportSet, make_params, method_class
from edge_foct.runtime.preprocess import Preprocessor

MAX_CAL = 16
CAL_SIZES = (0, 4, 8, 16)


def calibration_paths(train: tuple, support: list, split: int, shots: int, seed: int = 0) -> list:
    """Up to MAX_CAL train/good images not in the support, in a seeded order (first n = the n-image set)."""
    rest = [p for p in train if p not in support]
    rng = np.random.default_rng([seed, split, shots, 99])
    return [rest[i] for i in rng.permutation(len(rest))[:MAX_CAL]]


#: per-image statistics of the patch-score map recorded beside the max (the verdict's statistic):
#: rules on a statistic less driven by one patch are measured on the same runs (report --stat)
STATS = ("max", "top10", "blur3max", "q99")


def image_stats(s: np.ndarray) -> dict[str, float]:
    """Patch scores (Q,) -> {statistic: value}: max; mean of the 10 largest; max of the 3x3 box-
    filtered map (square grids; else the max); the 0.99 quantile."""
    s = np.asarray(s, np.float64)
    side = int(round(np.sqrt(s.size)))
    if side * side == s.size:
        import cv2

        blur = float(cv2.blur(s.reshape(side, side), (3, 3), borderType=cv2.BORDER_REPLICATE).max())
    else:
        blur = float(s.max())
    return {"max": float(s.max()), "top10": float(np.sort(s)[-10:].mean()), "blur3max": blur,
            "q99": float(np.quantile(s, 0.99))}


class _Recorder:
    """Wraps a method class so ``thresholds.calibrate`` records every view's patch scores (tagged
    full / loo memory, and ``line_`` while the line views are scored: ``self.line``, set by the view
    callables of ``calibrate_recorded``) without fitting or scoring anything twice."""

    def __init__(self, cls) -> None:
        self.cls, self.log, self._fits, self.line = cls, [], 0, False

    def __getattr__(self, name):
        return getattr(self.cls, name)

    def fit(self, support, params):
        tag = "full" if self._fits == 0 else "loo"
        self._fits += 1
        return _RecordedMethod(self.cls.fit(support, params), tag, self)


class _RecordedMethod:
    def __init__(self, m, tag: str, rec: _Recorder) -> None:
        self.m, self.tag, self.rec = m, tag, rec

    def __getattr__(self, name):
        return getattr(self.m, name)

    def score(self, v, update: bool = False):
        r = self.m.score(v, update=update)
        self.rec.log.append((("line_" if self.rec.line else "") + self.tag, image_stats(r.scores)))
        return r


def line_features(store: FeatureStore, path, n: int, seed: int) -> np.ndarray:
    """(n, Q, D) features of ``runtime.augment.line_views`` of one image, cached in the store as
    ("line", path, seed, i)."""
    from edge_foct.runtime.augment import line_views

    keys = [("line", path, seed, i) for i in range(n)]
    if any(k not in store._feats for k in keys):
        imgs = line_views(read_image(path), n, seed=seed)
        store._embed(keys, lambda k: imgs[k[3]])
    return np.stack([store._feats[k] for k in keys])


def calibrate_recorded(name: str, cls, params, support, vf: np.ndarray, lf: np.ndarray | None):
    """``thresholds.calibrate`` (with the line views ``lf`` when given) -> (Threshold, stats
    {STAT: {self, loo, line_self, line_loo}}) of every view it scored."""
    rec = _Recorder(cls)

    def views(i):
        rec.line = False
        return vf[i]

    def line(i):
        rec.line = True
        return lf[i]

    orig = thresholds.method_class
    thresholds.method_class = lambda _name: rec
    try:
        learnt = thresholds.calibrate(name, params, support, views, line=None if lf is None else line)
    finally:
        thresholds.method_class = orig
    stats = {k: {tag: [st[k] for t, st in rec.log if t == full] for tag, full in
                 (("self", "full"), ("loo", "loo"), ("line_self", "line_full"), ("line_loo", "line_loo"))}
             for k in STATS}
    return learnt, stats


def test_subset(cat, max_test: int | None, seed: int = 0) -> list[int]:
    """Indices of the test images scored: all, or the images `edge-foct eval --max-test N --seed 0`
    scores (``protocol.limit_test_set``: a seeded subset, N/2 good + N/2 defective). Caches collected
    before 2026-12-02 17:30 UTC drew ``--max-test`` per label in proportion instead."""
    kept = set(limit_test_set(cat, max_test, seed).test)
    return [i for i, t in enumerate(cat.test) if t in kept]


def support_of(cat, store: FeatureStore, spec: str, shots: int, split: int, fg_fn):
    """-> (method name, class, params, support paths, stream order, SupportSet) of one run."""
    name, _, preset = spec.partition("/")
    cls = method_class(name)
    params = make_params(name, {}, preset or None)
    support_paths, order = draw_split(cat, shots, split, 0)
    feats = store.features(support_paths)
    fg = None
    if cls.uses_foreground and fg_fn is not None:
        fg = np.stack([mask_to_grid(fg_fn(store.pre.crop_rgb(read_image(p)))[0], store.pre.grid)
                       for p in support_paths])
    return name, cls, params, support_paths, order, SupportSet(feats, fg, store.pre.grid)


def collect_one(cat, store: FeatureStore, spec: str, shots: int, split: int, fg_fn, views: int = 8,
                subset: list[int] | None = None, line: bool = True) -> dict:
    name, cls, params, support_paths, order, support = support_of(cat, store, spec, shots, split, fg_fn)
    vf = np.stack([store.views(None, p, views, seed=i) for i, p in enumerate(support_paths)])
    lf = np.stack([line_features(store, p, views, LINE_SEED + i) for i, p in enumerate(support_paths)]) \
        if line else None
    learnt, view_stats = calibrate_recorded(name, cls, params, support, vf, lf)
    method = cls.fit(support, params)
    method.set_gate(learnt.value)
    cal = calibration_paths(cat.train, support_paths, split, shots)
    cal_stats = [image_stats(method.score(store[p], update=False).scores) for p in cal]
    n = len(cat.test)
    keep = set(range(n) if subset is None else subset)
    test_stats = [None] * n
    for i in order:
        if i in keep:
            test_stats[i] = image_stats(method.score(store[cat.test[i].path], update=True).scores)
    test_stats = [test_stats[i] for i in sorted(keep)]  # the subset, in the test set's order
    col = lambda rows, k: [r[k] for r in rows]  # noqa: E731
    stats = {k: {"test": col(test_stats, k), "cal": col(cal_stats, k), **view_stats[k]} for k in STATS}
    return {"scores": np.array(stats["max"]["test"]), "order": order, "cal": np.array(stats["max"]["cal"]),
            "threshold": learnt.to_json(), "support": [p.name for p in support_paths], "stats": stats}


def collect(args) -> None:
    bb = Backbone.load(args.backbone)
    pre = Preprocessor(args.size, args.size)
    args.cache.mkdir(parents=True, exist_ok=True)
    fg_fn = make_foreground()
    flags = set()
    try:
        flags = {f for line in open("/proc/cpuinfo") if line.startswith("flags") for f in line.split()[2:]}
    except OSError:
        pass
    meta = {"backbone": bb.info.to_json(), "size": args.size, "machine": machine_info(), "shots": args.shots,
            "max_test": args.max_test, "elpv": args.elpv,
            "splits": args.splits, "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                                                "amx_int8", "amx_bf16"})}
    (args.cache / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    if args.elpv:  # the layout `edge-foct eval --elpv` reads
        from edge_foct.edge_app.datasets.elpv import elpv_root

        args.data = elpv_root()
    for cat in find_categories(args.data, args.categories or None):
        store = FeatureStore(bb, pre, 8)
        t0 = time.time()
        store.ensure([cat.test[i].path for i in test_subset(cat, args.max_test)])
        print(f"{cat.name}: test features {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        subset = test_subset(cat, args.max_test)
        labels = np.array([cat.test[i].defective for i in subset])
        for spec in args.methods:
            path = args.cache / f"{cat.name}__{spec.replace('/', '-')}.json"
            if path.exists():
                continue
            runs = []
            t0 = time.time()
            for shots in args.shots:
                for split in range(args.splits):
                    r = collect_one(cat, store, spec, shots, split, fg_fn, subset=subset)
                    runs.append({"shots": shots, "split": split, "scores": r["scores"].tolist(),
                                 "cal": r["cal"].tolist(), "threshold": r["threshold"], "support": r["support"],
                                 "stats": r["stats"]})
            path.write_text(json.dumps({"category": cat.name, "method": spec, "labels": labels.tolist(),
                                        "test_images": f"{len(subset)} of {len(cat.test)}", "runs": runs}))
            print(f"{cat.name} {spec}: {len(runs)} runs, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        del store


def add_line(args) -> None:
    """Add the line views' scores (``Threshold.line_samples`` / ``line_self_samples`` and the
    ``line_loo`` / ``line_self`` stats) to the runs of an existing cache (``--source``), written as
    a new cache (``--cache``): each run's support is drawn again, ``calibrate`` re-run with the line
    views, and its leave-one-out samples checked against the cached ones (same draw, same scores).
    Test and calibration scores are copied, not recomputed. Caches without these fields stay readable."""
    bb = Backbone.load(args.backbone)
    pre = Preprocessor(args.size, args.size)
    args.cache.mkdir(parents=True, exist_ok=True)
    fg_fn = make_foreground()
    meta = json.loads((args.source / "meta.json").read_text())
    meta["line_views"] = {"added_by": "threshold_loco.py add-line", "shots": args.shots, "machine": machine_info()}
    (args.cache / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    data = args.data
    if meta.get("elpv"):
        from edge_foct.edge_app.datasets.elpv import elpv_root

        data = elpv_root()
    cats = {c.name: c for c in find_categories(data, None)}
    for f in sorted(args.source.glob("*__*.json")):
        out = args.cache / f.name
        if out.exists():
            continue
        d = json.loads(f.read_text())
        cat = cats[d["category"]]
        store = FeatureStore(bb, pre, 8)
        t0 = time.time()
        for r in d["runs"]:
            if r["shots"] not in args.shots:
                continue
            name, cls, params, paths, _, support = support_of(cat, store, d["method"], r["shots"], r["split"], fg_fn)
            if [p.name for p in paths] != r["support"]:
                raise SystemExit(f"{f.name} shots {r['shots']} split {r['split']}: support draw differs "
                                 f"({[p.name for p in paths]} vs {r['support']})")
            vf = np.stack([store.views(None, p, 8, seed=i) for i, p in enumerate(paths)])
            lf = np.stack([line_features(store, p, 8, LINE_SEED + i) for i, p in enumerate(paths)])
            learnt, view_stats = calibrate_recorded(name, cls, params, support, vf, lf)
            old = np.array(r["threshold"]["samples"])
            rel = float(np.max(np.abs(old - learnt.samples) / np.maximum(np.abs(old), 1e-9)))
            if rel > 0.05:  # another method version than the cache's: its scores are not comparable
                raise SystemExit(f"{f.name} shots {r['shots']} split {r['split']}: leave-one-out samples differ "
                                 f"from the cache by up to {rel:.1%} (re-collect this method)")
            if rel > 1e-3:
                print(f"{f.name} shots {r['shots']} split {r['split']}: leave-one-out samples within {rel:.2%} "
                      f"of the cache", file=sys.stderr, flush=True)
            tj = learnt.to_json()
            r["threshold"]["line_samples"], r["threshold"]["line_self_samples"] = tj["line_samples"], \
                tj["line_self_samples"]
            if r.get("stats"):
                for k in STATS:
                    r["stats"][k]["line_loo"] = view_stats[k]["line_loo"]
                    r["stats"][k]["line_self"] = view_stats[k]["line_self"]
        out.write_text(json.dumps(d))
        print(f"{f.name}: line views added, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        del store


# ------------------------------------------------------------------------------------------ report

def load(cache: Path) -> list[dict]:
    """Every run as {category, method, shots, split, scores (N,), labels (N,), cal (<=16,), threshold}."""
    out = []
    for f in sorted(cache.glob("*__*.json")):
        d = json.loads(f.read_text())
        labels = np.array(d["labels"], bool)
        for r in d["runs"]:
            out.append({"category": d["category"], "method": d["method"], "shots": r["shots"], "split": r["split"],
                        "scores": np.array(r["scores"]), "labels": labels, "cal": np.array(r["cal"]),
                        "threshold": thresholds.Threshold.from_json(r["threshold"]), "stats": r.get("stats")})
    return out


def with_stat(runs: list[dict], stat: str) -> list[dict]:
    """The runs with every score (test, calibration, self and leave-one-out views) replaced by the
    per-image statistic ``stat`` of the same patch maps (``max`` = the verdict's own statistic)."""
    if stat == "max":
        return runs
    out = []
    for r in runs:
        st = r["stats"][stat]
        thr = replace(r["threshold"], samples=tuple(st["loo"]), self_samples=tuple(st["self"]),
                      value=max(st["self"]), patch_quantiles=(), line_samples=tuple(st.get("line_loo", ())),
                      line_self_samples=tuple(st.get("line_self", ())))
        out.append({**{k: v for k, v in r.items() if not k.startswith("_")}, "scores": np.array(st["test"]),
                    "cal": np.array(st["cal"]), "threshold": thr})
    return out


def rates(run: dict, t: float) -> tuple[float, float]:
    s, y = run["scores"], run["labels"]
    flagged = ~(s <= t)
    return float(flagged[~y].mean()), float((~flagged[y]).mean())


def grid_rates(run: dict, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds (G,) -> (false-alarm rates (G,), miss rates (G,)) of one run, by binary search."""
    if "_good" not in run:
        s, y = run["scores"], run["labels"]
        run["_good"], run["_bad"] = np.sort(np.where(np.isnan(s), np.inf, s)[~y]), np.sort(np.where(np.isnan(s), np.inf, s)[y])
    g, b = run["_good"], run["_bad"]
    return 1.0 - np.searchsorted(g, t, "right") / len(g), np.searchsorted(b, t, "right") / len(b)


_A = tuple(round(0.05 * i, 2) for i in range(-14, 15))  # -0.70 .. 0.70
_B = tuple(round(0.25 * i, 2) for i in range(0, 11))  # 0 .. 2.5
_W = tuple(round(0.1 * i, 1) for i in range(0, 11))  # 0 .. 1


def _loo(thr) -> np.ndarray:
    return np.asarray(thr.samples or thr.self_samples or (thr.value,), np.float64)


#: rule families measured here beside runtime.threshold.RULES (issue 12, item 2): name ->
#: (needs calibration images, grid of (a, b), thresholds(a, b, Threshold, cal)); a, b are arrays
EXTRA_RULES = {
    "self-median": (False, thresholds._grid(_A, _B), lambda a, b, t, c: float(np.median(t.self_samples or (t.value,)))
                    * (1 + a) * thresholds.shift_ratio(t) ** b),
    "cal-shift": (True, thresholds._grid(_A, _B), lambda a, b, t, c: float(np.median(c))
                  * (1 + a) * thresholds.shift_ratio(t) ** b),
    "cal-max-shift": (True, thresholds._grid(_A, _B), lambda a, b, t, c: float(np.max(c))
                      * (1 + a) * thresholds.shift_ratio(t) ** b),
}


def _top2(c: np.ndarray) -> float:
    return float(np.sort(c)[-2:].mean())


def _second(c: np.ndarray) -> float:
    return float(np.sort(c)[-2]) if c.size >= 2 else float(c.max())


def _log_sigma(c: np.ndarray) -> float:
    lc = np.log(c)
    return 1.4826 * float(np.median(np.abs(lc - np.median(lc))))


_S = tuple(round(0.1 * i, 1) for i in range(-5, 6))  # -0.5 .. 0.5

# tried in the third pass (2026-12-02, s14; benchmarks/threshold_rules.md "Rules tried"), not shipped
EXTRA_RULES.update({
    "blend-loo-top2": (True, thresholds._grid(_A, _W), lambda a, b, t, c: (1 + a) * _loo(t).max() ** (1 - b)
                       * _top2(c) ** b),
    "blend-loo-2nd": (True, thresholds._grid(_A, _W), lambda a, b, t, c: (1 + a) * _loo(t).max() ** (1 - b)
                      * _second(c) ** b),
    "max-loo-cal": (True, thresholds._grid(_A, _S), lambda a, b, t, c: (1 + a) * np.maximum(_loo(t).max(),
                                                                                             c.max() * (1 + b))),
    "cal-med-loo-spread": (True, thresholds._grid(_A, _B), lambda a, b, t, c: float(np.median(c)) * (1 + a)
                           * (_loo(t).max() / np.median(_loo(t))) ** b),
    "cal-lognormal": (True, thresholds._grid(_A, _B), lambda a, b, t, c: (1 + a) * np.exp(
        np.median(np.log(c)) + b * np.hypot(_log_sigma(c), np.log(_loo(t).max() / np.median(_loo(t)))))),
    "loo-shrink": (False, thresholds._grid(_A, _W), lambda a, b, t, c: (1 + a) * _loo(t).max() ** (1 - b)
                   * (np.median(_loo(t)) * thresholds.shift_ratio(t)) ** b),
    "loo-max-floor": (False, thresholds._grid(_A, _B), lambda a, b, t, c: (1 + a) * np.maximum(
        _loo(t).max(), np.median(_loo(t)) * thresholds.shift_ratio(t) ** b)),
    "loo-q75": (False, thresholds._grid(_A, _B), lambda a, b, t, c: (1 + a) * np.quantile(_loo(t), 0.75)
                * (_loo(t).max() / np.median(_loo(t))) ** b),
})


def _line_rule(rule: str, a, b, thr):
    """The rules on the support's line views (``runtime.augment.line_views``, scored by
    ``calibrate(line=...)``): loo max x (median line view / median view)^b, against the leave-one-out
    memories (``loo-max-line``; one support image: its own memory) or the full memory
    (``loo-max-jitter``); ``line-max``: the largest line-view score x shift^b. Without line views
    (an older cache) the ratio is 1 and the line maximum is the views' maximum."""
    loo_side = bool(thr.samples and thr.line_samples) and rule != "loo-max-jitter"
    base = np.asarray(thr.samples if loo_side else (thr.self_samples or thr.samples) or (thr.value,), np.float64)
    line = np.asarray(thr.line_samples if loo_side else thr.line_self_samples, np.float64)
    if rule == "line-max":
        top = float(line.max()) if line.size else float(base.max())
        return top * (1.0 + a) * thresholds.shift_ratio(thr) ** b
    med = float(np.median(base))
    ratio = float(np.median(line)) / med if line.size and med > 0 else 1.0
    return (1.0 + a) * float(_loo(thr).max()) * ratio ** b


_W2 = tuple(round(0.1 * i, 1) for i in range(21))  # 0 .. 2

# tried in the fourth pass (2026-12-02, s15; benchmarks/threshold_rules.md "Issue 12, fourth pass"), not
# shipped: pseudo-calibration from the support's own line views, no calibration images
EXTRA_RULES.update({
    "loo-max-line": (False, thresholds._grid(_A, _W2), lambda a, b, t, c: _line_rule("loo-max-line", a, b, t)),
    "loo-max-jitter": (False, thresholds._grid(_A, _W2), lambda a, b, t, c: _line_rule("loo-max-jitter", a, b, t)),
    "line-max": (False, thresholds._grid(_A, _B), lambda a, b, t, c: _line_rule("line-max", a, b, t)),
})


def defined(rule: str, shots: int) -> bool:
    """Whether ``rule`` is defined at this support size (runtime.threshold.RuleSpec.min_support)."""
    return rule not in thresholds.RULES or shots >= thresholds.RULES[rule].min_support


def family(rule: str) -> tuple[bool, tuple, object]:
    """-> (needs calibration, constant grid, thresholds(a, b, Threshold, cal))."""
    if rule in thresholds.RULES:
        spec = thresholds.RULES[rule]
        return spec.needs_calibration, spec.grid, lambda a, b, t, c: thresholds.apply_rule(rule, (a, b), t, c)
    return EXTRA_RULES[rule]


def rule_threshold(rule: str, const, thr, cal: np.ndarray):
    if rule in thresholds.ENSEMBLES:  # each member falls back to support-shift without calibration images
        return thresholds.apply_rule(rule, tuple(const), thr, cal)
    needs, _, fn = family(rule)
    cal = np.asarray(cal, np.float64)
    cal = cal[np.isfinite(cal)]
    if needs and cal.size == 0:
        return thresholds.apply_rule("support-shift", const, thr, cal)
    return fn(np.asarray(const[0]), np.asarray(const[1]), thr, cal)


def evaluate_grid(runs: list[dict], rule: str, n_cal: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """-> (categories, false-alarm rates (C, G), miss rates (C, G)) over the rule's constant grid."""
    grid = np.array(family(rule)[1])  # (G, 2)
    acc: dict[str, list] = {}
    for r in runs:
        t = np.asarray(rule_threshold(rule, (grid[:, 0], grid[:, 1]), r["threshold"], r["cal"][:n_cal]))
        acc.setdefault(r["category"], []).append(grid_rates(r, np.broadcast_to(t, (len(grid),))))
    cats = sorted(acc)
    fa = np.stack([np.mean([x[0] for x in acc[c]], axis=0) for c in cats])
    miss = np.stack([np.mean([x[1] for x in acc[c]], axis=0) for c in cats])
    return cats, fa, miss


def evaluate(runs: list[dict], rule: str, const: tuple[float, float], n_cal: int) -> dict[str, tuple[float, float]]:
    """category -> (mean false-alarm rate, mean miss rate) of one rule/constant over the runs."""
    acc: dict[str, list] = {}
    for r in runs:
        t = rule_threshold(rule, const, r["threshold"], r["cal"][:n_cal])
        acc.setdefault(r["category"], []).append(rates(r, t))
    return {c: tuple(np.mean(v, axis=0)) for c, v in acc.items()}


FA_CAP = 0.25  # the bound: no category above 25 % false alarms


def choose(runs: list[dict], n_cal: int, rules=None) -> tuple[str, tuple[float, float]]:
    """The rule (of ``rules``, default the family `fit` ships at this support size and calibration,
    runtime.threshold.family_for; a family is skipped at shot counts it is not defined for) and
    constants minimising mean (false alarms + misses) over the runs' categories, plus 2x any
    category's false alarms above FA_CAP."""
    best = None
    k = min(r["shots"] for r in runs)
    for rule in (rules or [thresholds.family_for(k, n_cal)]):
        if rule in thresholds.ENSEMBLES:  # each member's constants chosen on its own, as nested_ensemble
            if not defined(rule, k) or thresholds.RULES[rule].needs_calibration != (n_cal > 0):
                continue
            const = tuple(c for m in thresholds.ENSEMBLES[rule] for c in choose(runs, n_cal, [m])[1])
            per = evaluate(runs, rule, const, n_cal)
            fa = np.array([v[0] for v in per.values()])
            obj = float(np.mean([sum(v) for v in per.values()]) + 2.0 * np.maximum(fa - FA_CAP, 0.0).sum())
            if best is None or obj < best[0]:
                best = (obj, rule, const)
            continue
        needs, grid, _ = family(rule)
        if needs != (n_cal > 0):  # calibration images given: a rule that reads them
            continue
        if not defined(rule, k):  # e.g. no leave-one-out at 1 shot
            continue
        _, fa, miss = evaluate_grid(runs, rule, n_cal)
        obj = (fa + miss).mean(axis=0) + 2.0 * np.maximum(fa - FA_CAP, 0.0).sum(axis=0)  # (G,)
        i = int(np.argmin(obj))
        if best is None or obj[i] < best[0]:
            best = (float(obj[i]), rule, tuple(float(v) for v in grid[i]))
    return best[1], best[2]


#: budgets at which the budget rule's achieved false-alarm rate is checked (BUDGET_SIGMA is chosen on them)
BUDGETS_TRACKED = (0.01, 0.02, 0.05, 0.1, 0.2)


def budget_fa(runs: list[dict], bases: list[float], budget: float, shift: float, sigma: float) -> float:
    """Mean over the runs' categories of the false-alarm rate of the budget rule; bases: each run's
    learnt threshold (the rule the budget moves)."""
    per: dict[str, list] = {}
    for r, base in zip(runs, bases):
        per.setdefault(r["category"], []).append(budget_rates(r, base, shift, sigma, budget)[0])
    return float(np.mean([np.mean(v) for v in per.values()]))


def choose_budget_shift(runs: list[dict], bases: list[float], ref: float = thresholds.BUDGET_REF) -> float:
    """The smallest line shift whose mean false-alarm rate over these runs' categories is within ``ref``."""
    for shift in thresholds.BUDGET_SHIFT_GRID:
        if budget_fa(runs, bases, ref, shift, 0.0) <= ref:
            return shift
    return thresholds.BUDGET_SHIFT_GRID[-1]


def choose_budget_sigma(groups: list[tuple[list[dict], list[float], float]]) -> float:
    """groups: (runs, bases, shift) per shot count and calibration size -> the sigma whose achieved
    rates track BUDGETS_TRACKED best: least mean |log((rate + 1 %) / (budget + 1 %))|."""
    def miss(sigma: float) -> float:
        return float(np.mean([abs(np.log((budget_fa(runs, bases, b, shift, sigma) + 0.01) / (b + 0.01)))
                              for runs, bases, shift in groups for b in BUDGETS_TRACKED]))
    return min(thresholds.BUDGET_SIGMA_GRID, key=miss)


def budget_choice(runs: list[dict], held: str | None, n_cals=(0, 8)) -> dict:
    """The learnt rules and the budget rule's constants chosen on the categories other than ``held``
    (None: all): {"rules": {(shots, n_cal): (rule, constants, shift)}, "sigma": sigma}."""
    train = [r for r in runs if r["category"] != held]
    rules, groups = {}, []
    for shots in sorted({r["shots"] for r in train}):
        sel = [r for r in train if r["shots"] == shots]
        for n in n_cals:
            rule, c = choose(sel, n)
            bases = [float(rule_threshold(rule, c, r["threshold"], r["cal"][:n])) for r in sel]
            shift = choose_budget_shift(sel, bases)
            rules[(shots, n)] = (rule, c, shift)
            groups.append((sel, bases, shift))
    return {"rules": rules, "sigma": choose_budget_sigma(groups)}


def budget_rates(run: dict, base: float, shift: float, sigma: float, budget: float):
    """(false-alarm rate, miss rate) of one run under the budget rule moved from its learnt threshold ``base``."""
    return rates(run, float(thresholds.budget_threshold(budget, base, shift, sigma)))


def report(args) -> None:
    runs = load(args.cache)
    meta = json.loads((args.cache / "meta.json").read_text())
    cats = sorted({r["category"] for r in runs})
    methods = list(dict.fromkeys(r["method"] for r in runs))
    mach = meta["machine"]
    out = [f"Backbone {meta['backbone']['id']} ({meta['size']} px, float features: no int8 kernel path); methods "
           f"{', '.join(methods)}; seed 0, {meta['splits']} splits; CPU {mach.get('cpu', '?')} "
           f"({', '.join(meta.get('cpu_flags', [])) or 'flags not recorded'}), {mach.get('cores', '?')} cores, "
           f"load {mach.get('load_average_1_5_15', '?')}; commit {str(mach.get('git', {}).get('commit', '?'))[:7]}.", ""]
    for shots in args.report_shots:
        sel = [r for r in runs if r["shots"] == shots]  # chosen per shot count, as fit ships it
        out += [f"### {shots}-shot: false alarms / misses (%) at the rule chosen on the other four categories",
                "", "| category | oracle | current fit rule | " + " | ".join(f"{n} cal" for n in CAL_SIZES) + " |",
                "|" + "---|" * (3 + len(CAL_SIZES))]
        sums = {n: [] for n in CAL_SIZES}
        sums["oracle"], sums["current"] = [], []
        for held in cats:
            test = [r for r in runs if r["category"] == held and r["shots"] == shots]
            if not test:
                continue
            train = [r for r in sel if r["category"] != held]
            orc = np.mean([oracle_threshold(r["labels"], r["scores"])[1:] for r in test], axis=0)
            cur = np.mean([rates(r, r["threshold"].value) for r in test], axis=0)
            cells = [f"{orc[0] * 100:.0f} / {orc[1] * 100:.0f}", f"{cur[0] * 100:.0f} / {cur[1] * 100:.0f}"]
            sums["oracle"].append(orc.sum())
            sums["current"].append(cur.sum())
            for n in CAL_SIZES:
                rule, c = choose(train, n)
                fa, miss = evaluate(test, rule, c, n)[held]
                sums[n].append(fa + miss)
                cells.append(f"{fa * 100:.0f} / {miss * 100:.0f} ({rule} {', '.join(f'{x:g}' for x in c)})")
            out.append(f"| {held} | " + " | ".join(cells) + " |")
        out.append("| **mean false alarms + misses** | " + " | ".join(
            f"{np.mean(sums[k]) * 100:.1f}" for k in ["oracle", "current", *CAL_SIZES]) + " |")
        out.append("")
    # per method, at the shot counts of --method-shots (the rule chosen per held-out category as above)
    for shots in args.method_shots:
        out += [f"### {shots}-shot per method: false alarms / misses (%), rule chosen on the other four categories", "",
                "| category | method | oracle | current fit rule | 0 cal | 8 cal |", "|---|---|---|---|---|---|"]
        chosen = {(h, n): choose([r for r in runs if r["category"] != h and r["shots"] == shots], n)
                  for h in cats for n in (0, 8)}
        sums: dict[str, list] = {}
        for held in cats:
            for m in methods:
                test = [r for r in runs if r["category"] == held and r["shots"] == shots and r["method"] == m]
                if not test:
                    continue
                orc = np.mean([oracle_threshold(r["labels"], r["scores"])[1:] for r in test], axis=0)
                cur = np.mean([rates(r, r["threshold"].value) for r in test], axis=0)
                cells = [orc, cur] + [np.array(evaluate(test, *chosen[(held, n)], n)[held]) for n in (0, 8)]
                sums.setdefault(m, []).append([c.sum() for c in cells])
                out.append(f"| {held} | {m} | " + " | ".join(f"{c[0] * 100:.0f} / {c[1] * 100:.0f}" for c in cells) + " |")
        for m, v in sums.items():
            out.append(f"| **mean FA + misses** | {m} | " + " | ".join(f"{x * 100:.1f}" for x in np.mean(v, axis=0)) + " |")
        out.append("")
    # the false-alarm budget (the rule `fit --max-false-alarms` applies), 8 calibration images
    choices = {held: budget_choice(runs, held) for held in [*cats, None]}
    for budget in args.budgets:
        out += [f"### false-alarm budget {budget:.0%} (`--max-false-alarms`), 8 calibration images: achieved "
                f"false alarms / misses on test good parts, per category and shots (shift and sigma chosen on "
                f"the other four)", "",
                "| category | " + " | ".join(f"{k}-shot" for k in args.report_shots) + " |",
                "|" + "---|" * (1 + len(args.report_shots))]
        for held in cats:
            ch, cells = choices[held], []
            for shots in args.report_shots:
                test = [r for r in runs if r["category"] == held and r["shots"] == shots]
                rule, c, shift = ch["rules"][(shots, 8)]
                fa, miss = np.mean([budget_rates(r, float(rule_threshold(rule, c, r["threshold"], r["cal"][:8])),
                                                 shift, ch["sigma"], budget) for r in test], axis=0)
                cells.append(f"{fa * 100:.0f} / {miss * 100:.0f} (shift {shift:g})")
            out.append(f"| {held} (sigma {ch['sigma']:g}) | " + " | ".join(cells) + " |")
        out.append("")
    out += ["### chosen on all five categories (what `edge-foct fit` ships: runtime.threshold.SHIPPED_RULES)", ""]
    for shots in args.report_shots:
        sel = [r for r in runs if r["shots"] == shots]
        for n in CAL_SIZES:
            rule, c = choose(sel, n)
            out.append(f"- {shots}-shot, {n} calibration images: `{rule}` constants {', '.join(f'{x:g}' for x in c)}")
    allc = choices[None]
    out.append("- budget rule: BUDGET_SHIFTS " + ", ".join(f"{k}-shot {n} cal {v[2]:g}" for (k, n), v in
                                                         allc["rules"].items()) + f"; BUDGET_SIGMA {allc['sigma']:g}")
    print("\n".join(out))


def loco(runs: list[dict], shots: int, n_cal: int, rules, per_method: bool = False) -> tuple[float, float, float, dict]:
    """Each category held out in turn, the rule of ``rules`` chosen on the other four (per method
    when ``per_method``) -> (mean FA + misses, mean oracle FA + misses, worst category FA, choices)."""
    cats = sorted({r["category"] for r in runs})
    sums, orcs, fas, chosen = [], [], [], {}
    groups = sorted({r["method"] for r in runs}) if per_method else [None]
    for held in cats:
        test = [r for r in runs if r["category"] == held and r["shots"] == shots]
        if not test:
            continue
        res = []
        for m in groups:
            train = [r for r in runs if r["category"] != held and r["shots"] == shots and m in (None, r["method"])]
            rule, c = choose(train, n_cal, rules)
            chosen[(held, m)] = (rule, c)
            sel = [r for r in test if m in (None, r["method"])]
            res += [rates(r, rule_threshold(rule, c, r["threshold"], r["cal"][:n_cal])) for r in sel]
        fa, miss = np.mean(res, axis=0)
        sums.append(fa + miss)
        fas.append(fa)
        orcs.append(np.mean([sum(oracle_threshold(r["labels"], r["scores"])[1:]) for r in test]))
    return float(np.mean(sums)), float(np.mean(orcs)), float(max(fas)), chosen


def explore(args) -> None:
    """Every rule family x per-image statistic x shots x calibration size, LOCO (issue 12 item 2),
    and the per-category diagnostics of the support-to-line shift."""
    base = load(args.cache)
    stats = [s for s in STATS if base[0].get("stats") and s in (args.stats or STATS)] or ["max"]
    fams = [f for f in thresholds.RULES if f not in thresholds.ENSEMBLES] + list(EXTRA_RULES)
    out = ["| statistic | rule family | shots | cal | LOCO FA + misses | oracle | gap | worst category FA |",
           "|---|---|---|---|---|---|---|---|"]
    for stat in stats:
        runs = with_stat(base, stat)
        for shots in args.report_shots:
            for n_cal in args.cal:
                cands = [f for f in fams if family(f)[0] == (n_cal > 0) and defined(f, shots)]
                rows = [(f, [f], False) for f in cands] + [("any of " + ", ".join(cands), cands, False)]
                ship = [f for f in dict.fromkeys(b["cal" if n_cal else "none"] for b in thresholds.FAMILIES.values())
                        if defined(f, shots)]
                if len(ship) > 1:  # the family itself chosen on the other four, among the ones fit ships
                    rows.append(("any of " + ", ".join(ship) + " (FAMILIES)", ship, False))
                if args.per_method:
                    rows.append(("any, per method", cands, True))
                for name, rules, pm in rows:
                    m, o, w, _ = loco(runs, shots, n_cal, rules, pm)
                    out.append(f"| {stat} | {name} | {shots} | {n_cal} | {m * 100:.1f} | {o * 100:.1f} | "
                               f"{(m - o) * 100:+.1f} | {w * 100:.0f} |")
                print(out[-1], file=sys.stderr, flush=True)
    out += ["", "Per category (max statistic, methods and splits pooled): the support-to-line shift as ratios",
            "", "| category | shots | shift (loo/self median) | test good median / self max | test good median / cal median "
            "| oracle thr / self max | oracle thr / cal median | test good above cal max | FA at the shipped rule, 0 cal (chosen on all five: diagnosis only) "
            "| image AUROC | oracle FA + misses by statistic (" + " / ".join(stats) + ") |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    from sklearn.metrics import roc_auc_score

    by_stat = {s: with_stat(base, s) for s in stats}
    for cat in sorted({r["category"] for r in base}):
        for shots in args.report_shots:
            sel = [r for r in base if r["category"] == cat and r["shots"] == shots]
            if not sel:
                continue
            v = []
            for r in sel:
                t, good = r["threshold"], r["scores"][~r["labels"]]
                orc = oracle_threshold(r["labels"], r["scores"])[0]
                rule, c = thresholds.shipped_rule(shots, 0)
                v.append([thresholds.shift_ratio(t), np.median(good) / max(t.self_samples),
                          np.median(good) / np.median(r["cal"]), orc / max(t.self_samples), orc / np.median(r["cal"]),
                          float((good > r["cal"].max()).mean()), rates(r, thresholds.apply_rule(rule, c, t))[0]])
            v = np.median(v, axis=0)
            auc = np.mean([roc_auc_score(r["labels"], r["scores"]) for r in sel])
            orc = [np.mean([sum(oracle_threshold(r["labels"], r["scores"])[1:]) for r in by_stat[s]
                            if r["category"] == cat and r["shots"] == shots]) * 100 for s in stats]
            out.append(f"| {cat} | {shots} | " + " | ".join(f"{x:.2f}" for x in v[:5]) + f" | {v[5] * 100:.0f} % | "
                       f"{v[6] * 100:.0f} % | {auc * 100:.1f} | " + " / ".join(f"{x:.0f}" for x in orc) + " |")
    print("\n".join(out))


# ------------------------------------------------------------------------------------------ nested

def grid_tables(runs: list[dict], rules, n_cal: int, per_method: bool = False) -> dict:
    """rule -> (categories, FA (C, G), misses (C, G)) over its constant grid, methods pooled (or, per
    method: (rule, method) -> the same over that method's runs): every later choice only indexes rows."""
    out = {}
    groups = sorted({r["method"] for r in runs}) if per_method else [None]
    k = min(r["shots"] for r in runs)
    for rule in rules:
        if family(rule)[0] != (n_cal > 0) or not defined(rule, k):
            continue
        for m in groups:
            sel = [r for r in runs if m in (None, r["method"])]
            out[(rule, m)] = evaluate_grid(sel, rule, n_cal)
    return out


def constants_on(table, cats: list[str]) -> tuple[int, float]:
    """The grid index minimising the objective of ``choose`` on ``cats`` -> (index, objective)."""
    names, fa, miss = table
    rows = [names.index(c) for c in cats]
    f, m = fa[rows], miss[rows]
    obj = (f + m).mean(axis=0) + 2.0 * np.maximum(f - FA_CAP, 0.0).sum(axis=0)
    i = int(np.argmin(obj))
    return i, float(obj[i])


def family_score(table, cats: list[str], criterion: str, lam: float) -> float:
    """How well a family generalises across ``cats``: ``flat`` = its in-sample objective (constants
    chosen on all of cats, as ``choose``); ``inner`` = inner leave-one-category-out on cats (each held
    out, constants chosen on the rest) -> mean FA + misses + lam x max(0, worst category FA - FA_CAP);
    ``minimax`` = inner LOCO's worst category FA + misses."""
    names, fa, miss = table
    if criterion == "flat":
        i, obj = constants_on(table, cats)
        worst = max(fa[names.index(c), i] for c in cats)
        return obj + lam * max(0.0, worst - FA_CAP)
    held = []
    for c in cats:
        i, _ = constants_on(table, [x for x in cats if x != c])
        held.append((fa[names.index(c), i], miss[names.index(c), i]))
    held = np.array(held)
    if criterion == "minimax":
        return float(held.sum(axis=1).max())
    return float(held.sum(axis=1).mean() + lam * max(0.0, held[:, 0].max() - FA_CAP))


def _held_out(runs: list[dict], per_method: bool, pick) -> tuple[float, float, float, dict]:
    """The nested protocols' loop: for each held-out category h and method group m (None: pooled),
    ``pick(h, train, m)`` -> ((false-alarm, miss) rates on h to average, what was chosen) ->
    (mean FA + misses over held-out categories, oracle mean, worst category FA, {h: {m: chosen}})."""
    cats = sorted({r["category"] for r in runs})
    methods = sorted({r["method"] for r in runs}) if per_method else [None]
    sums, fas, orcs, chosen = [], [], [], {}
    for h in cats:
        train = [c for c in cats if c != h]
        res = []
        for m in methods:
            rates_h, chosen.setdefault(h, {})[m] = pick(h, train, m)
            res.extend(rates_h)
        fa_h, miss_h = np.mean(res, axis=0)
        sums.append(fa_h + miss_h)
        fas.append(fa_h)
        test = [r for r in runs if r["category"] == h]
        orcs.append(np.mean([sum(oracle_threshold(r["labels"], r["scores"])[1:]) for r in test]))
    return float(np.mean(sums)), float(np.mean(orcs)), float(max(fas)), chosen


def nested_loco(runs: list[dict], rules, n_cal: int, criterion: str, lam: float,
                per_method: bool = False) -> tuple[float, float, float, dict]:
    """Fully nested: for each held-out category the family AND its constants are chosen on the other
    four (family by ``family_score``, constants by ``constants_on``) -> (mean FA + misses over held-out
    categories, oracle mean, worst category FA, {held: chosen family (per method: {method: family})})."""
    tables = grid_tables(runs, rules, n_cal, per_method)

    def pick(h, train, m):
        fams = [t for t in tables if t[1] == m]
        best = min(fams, key=lambda t: (family_score(tables[t], train, criterion, lam), t[0]))
        i, _ = constants_on(tables[best], train)
        names, fa, miss = tables[best]
        return [(fa[names.index(h), i], miss[names.index(h), i])], best[0]  # methods weigh equally

    return _held_out(runs, per_method, pick)


def nested_ensemble(runs: list[dict], rules, n_cal: int, per_method: bool = False) -> tuple[float, float, float, dict]:
    """No family choice: the threshold is the geometric mean of every family's threshold in ``rules``,
    each family's constants chosen on the other four categories (``constants_on``) -> as ``nested_loco``."""
    tables = grid_tables(runs, rules, n_cal, per_method)

    def pick(h, train, m):
        consts = {t[0]: tuple(family(t[0])[1][constants_on(tables[t], train)[0]]) for t in tables if t[1] == m}
        res = []
        for r in runs:
            if r["category"] == h and m in (None, r["method"]):
                logs = [np.log(rule_threshold(f, c, r["threshold"], r["cal"][:n_cal])) for f, c in consts.items()]
                res.append(rates(r, float(np.exp(np.mean(logs)))))
        return res, ", ".join(f"{f} {c[0]:g}/{c[1]:g}" for f, c in consts.items())

    return _held_out(runs, per_method, pick)


def nested_pairs(runs: list[dict], rules, n_cal: int) -> tuple[float, float, float, dict]:
    """A family alone or a pair of families (the geometric mean of their thresholds), chosen together
    with every member's constants on the other four categories by ``choose``'s objective: what picking
    a pair such as ``geo-loo``'s on the categories at hand costs the held-out one -> as ``nested_loco``."""
    tables = grid_tables(runs, rules, n_cal)
    fams = [t[0] for t in tables]
    cands = [(f,) for f in fams] + list(itertools.combinations(fams, 2))

    def per_category(cand, consts, cats) -> dict[str, list]:
        out: dict[str, list] = {}
        for r in runs:
            if r["category"] in cats:
                logs = [np.log(rule_threshold(f, consts[f], r["threshold"], r["cal"][:n_cal])) for f in cand]
                out.setdefault(r["category"], []).append(rates(r, float(np.exp(np.mean(logs)))))
        return out

    def pick(h, train, m):
        consts = {f: tuple(family(f)[1][constants_on(tables[(f, None)], train)[0]]) for f in fams}

        def objective(cand) -> float:
            per = [np.mean(v, axis=0) for v in per_category(cand, consts, train).values()]
            fa = np.array([v[0] for v in per])
            return float(np.mean([v.sum() for v in per]) + 2.0 * np.maximum(fa - FA_CAP, 0.0).sum())

        best = min(cands, key=objective)
        return per_category(best, consts, [h])[h], "+".join(best)

    return _held_out(runs, False, pick)


def nested(args) -> None:
    """Issue 12, fourth pass, item 1: the family chosen on the other four categories too, by a
    criterion fixed a priori (``--criteria``), at the given shots and calibration sizes."""
    base = load(args.cache)
    runs_all = with_stat(base, "max")
    out = [("| shots | cal | candidate families | criterion | nested FA + misses | oracle | gap | worst category FA "
            "| family per held-out category |"), "|---|---|---|---|---|---|---|---|---|"]
    for shots in args.report_shots:
        runs = [r for r in runs_all if r["shots"] == shots]
        for n_cal in args.cal:
            allf = [f for f in [*thresholds.RULES, *EXTRA_RULES] if f not in thresholds.ENSEMBLES
                    and family(f)[0] == (n_cal > 0) and defined(f, shots)]
            if args.families:
                allf = [f for f in allf if f in args.families]
            sets = {"every family": allf}
            ship = [f for f in dict.fromkeys(b["cal" if n_cal else "none"] for b in thresholds.FAMILIES.values())
                    if f in allf]
            if len(ship) > 1:
                sets["shipped (" + ", ".join(ship) + ")"] = ship
            for f in args.singles:
                if f in allf:
                    sets[f] = [f]
            for group in args.sets:
                fs = [f for f in group.split(",") if f in allf]
                if fs:
                    sets[" + ".join(fs)] = fs
            for label, fams in sets.items():
                for crit in args.criteria:
                    c, _, lam = crit.partition(":")
                    if c == "ensemble":
                        if len(fams) < 2:
                            continue
                        m, o, w, ch = nested_ensemble(runs, fams, n_cal, args.per_method)
                    elif c == "pairs":  # a family or a pair of them picked on the four (pooled methods)
                        if len(fams) < 2 or args.per_method:
                            continue
                        m, o, w, ch = nested_pairs(runs, fams, n_cal)
                    else:
                        m, o, w, ch = nested_loco(runs, fams, n_cal, c, float(lam or 0), args.per_method)
                    picks = "; ".join(f"{h}: {'/'.join(v.values())}" for h, v in ch.items()) if len(fams) > 1 else ""
                    out.append(f"| {shots} | {n_cal} | {label} | {crit}{' per method' if args.per_method else ''} "
                               f"| {m * 100:.1f} | {o * 100:.1f} | {(m - o) * 100:+.1f} | {w * 100:.0f} | {picks} |")
                    print(out[-1], file=sys.stderr, flush=True)
    print("\n".join(out))


def gap_se(per: dict[str, list[dict]], n: int) -> float:
    """Standard error, over support draws, of the mean over categories of (false alarms + misses) minus the
    oracle's with n calibration images: per category the gap of each split (mean over the methods' rows,
    which share the split's support draw), its variance over splits / splits; SE = sqrt(sum) / categories.
    The resolution of a gap: five categories x five splits left +-1.6-1.7 points at 2 shots (issue 12)."""
    var = []
    for rows in per.values():
        by_split: dict[int, list[float]] = {}
        for r in rows:
            for i, g in zip(r["splits_of"], r["gap_per_split"][n]):
                by_split.setdefault(i, []).append(g)
        g = np.array([np.mean(v) for v in by_split.values()])
        var.append(g.var(ddof=1) / g.size if g.size > 1 else 0.0)
    return float(np.sqrt(np.sum(var)) / len(per))


def verdict(args) -> None:
    """The issue's table (benchmarks/results/verdict/): per category, method and shot count, false
    alarms / misses at the learnt threshold (no calibration images; 8 calibration images) beside the
    oracle, and the false-alarm budget's achieved rate. Categories of ``--cache`` get the rule chosen
    on the other four (LOCO); categories of ``--unseen`` (ELPV) the rule chosen on all of ``--cache``
    (what `edge-foct fit` ships): none of them helped choose anything."""
    runs = load(args.cache)
    # runs reported but not used to choose anything (e.g. PatchCore+ at shots the choice did not pool)
    extra = [r for d in args.extra for r in load(d)]
    unseen = load(args.unseen) if args.unseen else []
    have_u = {(r["category"], r["method"], r["shots"]) for r in unseen}
    unseen += [r for d in args.extra_unseen for r in load(d) if (r["category"], r["method"], r["shots"]) not in have_u]
    meta = json.loads((args.cache / "meta.json").read_text())
    cats = sorted({r["category"] for r in runs})
    rows, md = [], []
    have = {(r["category"], r["method"], r["shots"]) for r in runs}
    shown = runs + [r for r in extra if (r["category"], r["method"], r["shots"]) not in have]

    # the learnt rules and the budget rule's constants, chosen on the other four (None: on all five)
    choices = {held: budget_choice(runs, held) for held in [*cats, None]}
    for held in cats + sorted({r["category"] for r in unseen}):
        pool = shown if held in cats else unseen
        key = held if held in cats else None
        for shots in sorted({r["shots"] for r in pool}):
            ch = choices[key]
            rules = {n: ch["rules"][(shots, n)] for n in (0, 8)}
            for m in list(dict.fromkeys(r["method"] for r in pool)):
                test = sorted((r for r in pool if r["category"] == held and r["shots"] == shots and r["method"] == m),
                              key=lambda r: r["split"])
                if not test:
                    continue
                row = {"category": held, "shots": shots, "method": m, "splits": len(test),
                       "test_images": [int((~test[0]["labels"]).sum()), int(test[0]["labels"].sum())],
                       "held_out": "LOCO" if key else "unseen (rule chosen on all five)",
                       "extra": (held, m, shots) not in (have if key else have_u)}
                oracle = [oracle_threshold(r["labels"], r["scores"])[1:] for r in test]
                row["oracle"] = np.mean(oracle, axis=0).tolist()
                row["splits_of"] = [int(r["split"]) for r in test]
                row["gap_per_split"] = {}  # calibration images -> (false alarms + misses) - oracle's, per split
                for n in (0, 8):
                    rule, c, shift = rules[n]
                    bases = [float(rule_threshold(rule, c, r["threshold"], r["cal"][:n])) for r in test]  # learnt
                    learnt = [rates(r, t) for r, t in zip(test, bases)]
                    row[f"cal{n}"] = np.mean(learnt, axis=0).tolist()
                    row["gap_per_split"][n] = [sum(x) - sum(o) for x, o in zip(learnt, oracle)]
                    row[f"rule{n}"] = [rule, list(c)]
                    row[f"budget{n}"] = np.mean([budget_rates(r, t, shift, ch["sigma"], args.budget)
                                                 for r, t in zip(test, bases)], axis=0).tolist()
                    row[f"budget_shift{n}"] = shift
                    row[f"tracked{n}"] = {f"{b:g}": np.mean([budget_rates(r, t, shift, ch["sigma"], b)
                                                              for r, t in zip(test, bases)], axis=0).tolist()
                                          for b in BUDGETS_TRACKED}
                row["budget_sigma"] = ch["sigma"]
                rows.append(row)
    pct = lambda v: f"{v[0] * 100:.0f} / {v[1] * 100:.0f}"  # noqa: E731
    unseen_splits = "/".join(str(n) for n in sorted({r["splits"] for r in rows if r["held_out"] != "LOCO"}))
    mach = meta["machine"]
    md += [f"Backbone `{meta['backbone']['id']}` (D = {meta['backbone'].get('feature_dim')}, {meta['size']} px, "
           f"float; the default of a fresh install); seed 0, {meta['splits']} splits (support draws; the first 5 "
           f"are `edge-foct eval`'s; ELPV: {unseen_splits or 'none'}), 1/2/4 shots. CPU "
           f"{mach.get('cpu', '?')} ({', '.join(meta.get('cpu_flags', []))}), ONNX Runtime float32. Shared "
           f"categories: every rule chosen on the other four (LOCO); ELPV: the rules chosen on all five. "
           f"Cells: false alarms / misses (%) on the test set, mean over splits. Test images scored: listed "
           f"below and in verdict.json (a row on a subset says so); rows of runs the choice did not pool "
           f"(`--extra`) are reported under the rules chosen without them (and left out of the 'all' means). "
           f"Budget: `--max-false-alarms {args.budget:.0%}`: the learnt rule's threshold moved by a line "
           f"shift (per shot count, without / with calibration images) and BUDGET_SIGMA, both chosen on the "
           f"other four.", "",
           f"| category | shots | method | oracle | learnt (0 cal) | learnt (8 cal) | budget {args.budget:.0%} (0 cal) "
           f"| budget {args.budget:.0%} (8 cal) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['category']} | {r['shots']} | {r['method']} | {pct(r['oracle'])} | {pct(r['cal0'])} | "
                  f"{pct(r['cal8'])} | {pct(r['budget0'])} | {pct(r['budget8'])} |")
    groups = [("the five shared categories (LOCO)", set(cats)),
              ("ELPV (unseen: rules chosen on all five)", {r["category"] for r in unseen})]
    for title, group in groups:
        if not group:
            continue
        md += ["", f"Mean over {title} of false alarms + misses (points), per method and all methods; gap: the "
               f"learnt threshold's minus the oracle's, +- its standard error over the support draws (`gap_se`: "
               f"the splits' spread, the resolution of these means):", "",
               "| shots | method | oracle | learnt (0 cal) | learnt (8 cal) | gap 0 cal (+- SE) | gap 8 cal (+- SE) "
               "| worst category FA (0 / 8 cal) |", "|---|---|---|---|---|---|---|---|"]
        for shots in sorted({r["shots"] for r in rows}):
            for m in [*dict.fromkeys(r["method"] for r in rows), "all"]:
                per = {}
                for r in rows:
                    if (r["shots"] == shots and r["category"] in group and m in ("all", r["method"])
                            and not (m == "all" and r["extra"])):
                        per.setdefault(r["category"], []).append(r)
                if not per:
                    continue
                agg = {k: np.mean([np.mean([sum(x[k]) for x in v]) for v in per.values()])
                       for k in ("oracle", "cal0", "cal8")}
                worst = [max(np.mean([x[k][0] for x in v]) for v in per.values()) for k in ("cal0", "cal8")]
                label = m if len(per) == len(group) else f"{m} ({', '.join(sorted(per))} only)"
                se = [gap_se(per, n) * 100 for n in (0, 8)]
                md.append(f"| {shots} | {label} | {agg['oracle'] * 100:.1f} | {agg['cal0'] * 100:.1f} | "
                          f"{agg['cal8'] * 100:.1f} | {(agg['cal0'] - agg['oracle']) * 100:+.1f} +- {se[0]:.1f} | "
                          f"{(agg['cal8'] - agg['oracle']) * 100:+.1f} +- {se[1]:.1f} | "
                          f"{worst[0] * 100:.0f} % / {worst[1] * 100:.0f} % |")
    for title, group in groups:
        if not group:
            continue
        md += ["", f"The budget's achieved rate, mean over {title} and all methods: false alarms / misses (%) "
               f"(worst category's false alarms), per budget:", "",
               "| shots | calibration images | " + " | ".join(f"budget {b:.0%}" for b in BUDGETS_TRACKED) + " |",
               "|---|---|" + "---|" * len(BUDGETS_TRACKED)]
        for shots in sorted({r["shots"] for r in rows}):
            for n in (0, 8):
                per: dict[str, list] = {}
                for r in rows:
                    if r["shots"] == shots and r["category"] in group and not r["extra"]:
                        per.setdefault(r["category"], []).append(r[f"tracked{n}"])
                if not per:
                    continue
                cells = []
                for b in BUDGETS_TRACKED:
                    cat = [np.mean([x[f"{b:g}"] for x in v], axis=0) for v in per.values()]
                    fa, miss = np.mean(cat, axis=0)
                    cells.append(f"{fa * 100:.1f} / {miss * 100:.1f} ({max(c[0] for c in cat) * 100:.0f})")
                md.append(f"| {shots} | {n} | " + " | ".join(cells) + " |")
    allc = choices[None]
    md += ["", "Chosen on all five (what `edge-foct fit` ships; runtime.threshold.SHIPPED_RULES, BUDGET_SHIFTS, "
           "BUDGET_SIGMA): " + "; ".join(f"{k}-shot {n} cal `{v[0]}` ({', '.join(f'{x:g}' for x in v[1])}), budget "
                                         f"shift {v[2]:g}" for (k, n), v in allc["rules"].items())
           + f"; budget sigma {allc['sigma']:g}."]
    args.out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[tuple[str, str], list[int]]] = {}  # category -> (method, good + defective) -> shots
    for r in rows:
        n = "{} good + {} defective".format(*r["test_images"])
        counts.setdefault(r["category"], {}).setdefault((r["method"], n), []).append(r["shots"])
    counts = {c: {f"{m} ({'/'.join(map(str, k))}-shot)": n for (m, n), k in v.items()} for c, v in counts.items()}
    md += ["", "Test images scored per category and method, per shot count (ELPV: `edge-foct eval --elpv "
           "--max-test 200`'s seeded subset, 100 good + 100 defective cells per cell type, 20 train cells):", ""]
    md += [f"- {c}: " + "; ".join(f"{m} {n}" for m, n in v.items()) for c, v in counts.items()]
    meta = {**meta, "backbone": {k: v for k, v in meta["backbone"].items() if k != "path"}}  # no machine paths
    (args.out / "verdict.json").write_text(json.dumps({"meta": meta, "budget": args.budget, "rows": rows}, indent=1,
                                                      default=str))
    (args.out / "verdict.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--backbone", required=True)
    c.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    c.add_argument("--categories", nargs="*", default=[])
    c.add_argument("--methods", nargs="*", default=["patchcore", "patchcore+", "foct/edge"])
    c.add_argument("--shots", nargs="*", type=int, default=[1, 2, 4])
    c.add_argument("--splits", type=int, default=5)
    c.add_argument("--size", type=int, default=256)
    c.add_argument("--max-test", type=int, default=None,
                   help="score at most this many test images per category: the subset of `edge-foct eval "
                        "--max-test N` (seed 0; N/2 good + N/2 defective)")
    c.add_argument("--elpv", action="store_true", help="the ELPV layout of `edge-foct eval --elpv` instead of --data")
    c.add_argument("--cache", type=Path, default=Path("threshold-loco-cache"))
    r = sub.add_parser("report")
    r.add_argument("--cache", type=Path, default=Path("threshold-loco-cache"))
    r.add_argument("--report-shots", nargs="*", type=int, default=[1, 2, 4])
    r.add_argument("--budgets", nargs="*", type=float, default=[0.05])
    r.add_argument("--method-shots", nargs="*", type=int, default=[2])
    e = sub.add_parser("explore")
    e.add_argument("--cache", type=Path, default=Path("threshold-loco-cache"))
    e.add_argument("--report-shots", nargs="*", type=int, default=[1, 2, 4])
    e.add_argument("--cal", nargs="*", type=int, default=[0, 8])
    e.add_argument("--per-method", action="store_true")
    e.add_argument("--stats", nargs="*", default=None, help=f"per-image statistics to try (default all: {STATS})")
    n = sub.add_parser("nested")
    n.add_argument("--cache", type=Path, default=Path("threshold-loco-cache"))
    n.add_argument("--report-shots", nargs="*", type=int, default=[2])
    n.add_argument("--cal", nargs="*", type=int, default=[0, 4, 8, 16])
    n.add_argument("--criteria", nargs="*", default=["flat", "flat:1", "inner:0", "inner:1", "minimax"],
                   help="family criterion[:lambda]: flat (in-sample objective, as choose), inner (inner LOCO on "
                        "the four: mean + lambda x max(0, worst FA - 25 %%)), minimax (inner LOCO's worst category), "
                        "ensemble (no pick: every family's geometric mean), pairs (a family or a pair of them, "
                        "picked by the flat objective)")
    n.add_argument("--families", nargs="*", default=None, help="restrict the candidate families")
    n.add_argument("--singles", nargs="*", default=[], help="also report these families alone")
    n.add_argument("--per-method", action="store_true", help="family and constants chosen per method")
    n.add_argument("--sets", nargs="*", default=[], help="more candidate sets, comma-separated families")
    a = sub.add_parser("add-line")
    a.add_argument("--backbone", required=True)
    a.add_argument("--source", type=Path, required=True, help="an existing cache (read only)")
    a.add_argument("--cache", type=Path, required=True, help="the new cache, with the line views' scores")
    a.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    a.add_argument("--shots", nargs="*", type=int, default=[1, 2, 4])
    a.add_argument("--size", type=int, default=256)
    v = sub.add_parser("verdict")
    v.add_argument("--cache", type=Path, default=Path("threshold-loco-cache"))
    v.add_argument("--unseen", type=Path, default=None, help="a cache of categories outside --cache (ELPV)")
    v.add_argument("--extra", type=Path, nargs="*", default=[],
                   help="caches of more runs of the --cache categories, reported under the rules chosen without them")
    v.add_argument("--extra-unseen", type=Path, nargs="*", default=[], help="more caches of unseen categories")
    v.add_argument("--budget", type=float, default=0.05)
    v.add_argument("--out", type=Path, default=Path("benchmarks/results/verdict"))
    args = ap.parse_args()
    {"collect": collect, "add-line": add_line, "report": report, "explore": explore, "nested": nested,
     "verdict": verdict}[args.cmd](args)


if __name__ == "__main__":
    main()
