"""`serve`'s stream rule on replayed streams: the former rule against calibration from the first N frames.

Reads the scores that ``benchmarks/threshold_loco.py collect`` stored (every test image's score
for every category, method, shots and split of the eval protocol) and replays streams made of them:

- per run, the test set's good images and defects are each split in half (seeded): the first
  ``--frames`` frames of a stream are drawn from halves A, the rest (``--length`` - frames) from
  halves B, so no frame judged after calibration is an image the calibration saw;
- three streams: good parts only, 5 % defects, 30 % defects (defects drawn at that rate);
- "before": the former rule (median + 3 x 1.4826 MAD of the frames judged good, warm-up 20, window
  256, within [floor, ceiling]) started from the bank's fit-time threshold; "line": ``StreamThreshold``
  with the line's level alone (calibrated from the first N frames, held: stop 15); "now": its
  (k, bank weight) chosen among the line's level alone and its geometric mean with the bank's threshold
  (``runtime.threshold.STREAM_K_BY_SUPPORT``, ``STREAM_BANK_WEIGHT``). The bank's threshold is the
  no-calibration rule chosen on the other four categories (``threshold_loco.choose``).

Cells: false alarms - misses (%) over the frames after the first N (the same frames for every rule),
mean over methods and splits, per shot count. k and the weight are chosen leave-one-category-out
on the 5 % streams (the fit rule's objective): for each category on the other four.

    python benchmarks/stream_rule.py --cache threshold-loco-cache
"""

from __future__ import annotations

import argparse
import json
import math
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge_foct.runtime import threshold as thresholds

STREAMS = (("good only", 0.0), ("5 % defects", 0.05), ("30 % defects", 0.30))
K_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
WEIGHT_GRID = (0.0, 0.5)  # the bank's threshold's weight: none, or the geometric mean


class FormerStreamRule:
    """The rule `serve` used before issue 12 (runtime/threshold.py at ed69e87), kept for the table."""

    def __init__(self, start: thresholds.Threshold, k: float = 3.0, warmup: int = 20, window: int = 256) -> None:
        self.value, self.floor, self.ceiling = start.value, start.floor, start.ceiling
        self.k, self.warmup = k, warmup
        self._scores: deque[float] = deque(maxlen=window)

    def update(self, score: float) -> float:
        if score <= self.value:
            self._scores.append(score)
        if len(self._scores) >= self.warmup:
            a = np.fromiter(self._scores, np.float64)
            med = float(np.median(a))
            sigma = 1.4826 * float(np.median(np.abs(a - med)))
            self.value = float(np.clip(med + self.k * sigma, self.floor, self.ceiling))
        return self.value


def make_stream(run: dict, rate: float, frames: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (scores (length,), labels (length,) bool); the first ``frames`` from halves A, the rest from B."""
    rng = np.random.default_rng(seed)
    s, y = run["scores"], run["labels"]
    good, bad = rng.permutation(np.flatnonzero(~y)), rng.permutation(np.flatnonzero(y))
    halves = [(good[: len(good) // 2], bad[: len(bad) // 2]), (good[len(good) // 2:], bad[len(bad) // 2:])]
    idx, lab = [], []
    for (g, b), n in zip(halves, (frames, length - frames)):
        d = rng.random(n) < rate
        idx += [int(rng.choice(b)) if di else int(rng.choice(g)) for di in d]
        lab += list(d)
    return s[np.array(idx)], np.array(lab, bool)


def replay(rule, scores: np.ndarray) -> np.ndarray:
    flags = []
    for x in scores:
        flags.append(thresholds.is_defective(float(x), rule.value))
        rule.update(float(x))
    return np.array(flags)


def rates(flags: np.ndarray, labels: np.ndarray, frames: int) -> tuple[float, float]:
    f, y = flags[frames:], labels[frames:]
    return float(f[~y].mean()) if (~y).any() else math.nan, float((~f[y]).mean()) if y.any() else math.nan


def after_rule(run: dict, start: float, k: float, weight: float, frames: int) -> thresholds.StreamThreshold:
    """``StreamThreshold`` from the bank's threshold ``start`` (the learnt rule's value for this run),
    with the bounds ``finalise`` gives a bank of that value."""
    thr = run["threshold"]
    bank = replace(thr, value=start, floor=min(thr.floor, start), ceiling=max(thr.ceiling, start))
    return thresholds.StreamThreshold(bank, thresholds.StreamParams(frames=frames, k=k, bank_weight=weight))


def measure(runs: list[dict], make, rate: float, frames: int, length: int) -> dict[str, tuple[float, float]]:
    """category -> mean (false-alarm rate, miss rate) after the first ``frames`` frames."""
    out: dict[str, list] = {}
    for r in runs:
        scores, labels = make_stream(r, rate, frames, length, seed=r["_seed"])
        out.setdefault(r["category"], []).append(rates(replay(make(r), scores), labels, frames))
    return {c: tuple(np.nanmean(np.array(v, float), axis=0)) for c, v in out.items()}


def err(per: dict) -> float:
    """The fit rule's objective: mean (false alarms + misses) + 2 x each category's false alarms above 25 %."""
    return float(np.mean([fa + (0 if math.isnan(m) else m) for fa, m in per.values()])
                 + 2.0 * sum(max(0.0, fa - 0.25) for fa, _ in per.values()))


def choose(runs: list[dict], starts: dict[int, float], grid, frames: int, length: int) -> tuple[float, float]:
    """The (k, bank weight) of ``grid`` with the least ``err`` on these runs' 5 % streams."""
    return min(grid, key=lambda p: err(measure(runs, lambda r: after_rule(r, starts[id(r)], *p, frames),
                                               0.05, frames, length)))


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from threshold_loco import choose as choose_rule, load, rule_threshold

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("threshold-loco-cache"))
    ap.add_argument("--frames", type=int, default=thresholds.StreamParams.frames)
    ap.add_argument("--length", type=int, default=400)
    ap.add_argument("--shots", nargs="*", type=int, default=[1, 2, 4])
    args = ap.parse_args()
    every = load(args.cache)
    meta = json.loads((args.cache / "meta.json").read_text())
    for i, r in enumerate(every):
        r["_seed"] = i
    fmt = lambda x: "–" if math.isnan(x) else f"{x * 100:.0f}"  # noqa: E731
    fmt1 = lambda x: "–" if math.isnan(x) else f"{x * 100:.1f}"  # noqa: E731
    for shots in args.shots:
        runs = [r for r in every if r["shots"] == shots]
        cats = sorted({r["category"] for r in runs})
        chosen, starts = {}, {}
        for held in [*cats, None]:
            others = [r for r in runs if r["category"] != held]
            rule, c = choose_rule(others, 0)  # the bank's rule (no calibration images), chosen on the others
            st = {id(r): float(rule_threshold(rule, c, r["threshold"], r["cal"][:0])) for r in runs}
            starts[held] = st
            chosen[held] = {"line": choose(others, st, [(k, 0.0) for k in K_GRID], args.frames, args.length),
                            "now": choose(others, st, [(k, w) for w in WEIGHT_GRID for k in K_GRID],
                                          args.frames, args.length)}
        print(f"Replayed streams, {shots}-shot, methods {', '.join(dict.fromkeys(r['method'] for r in runs))}, "
              f"backbone {meta['backbone']['id']}; {args.length} frames, calibration from the first {args.frames}; "
              f"false alarms / misses (%) after them. before = the former rule from the fit's raw threshold; "
              f"line = the line's level alone (stop 15); now = (k, bank weight) chosen on the other four.\n")
        print("| category ((k, weight) chosen on the other four) | "
              + " | ".join(f"{n}: before / line / now" for n, _ in STREAMS) + " |")
        print("|---" * (1 + len(STREAMS)) + "|")
        tot = {n: [] for n, _ in STREAMS}
        for held in cats:
            test = [r for r in runs if r["category"] == held]
            st, ch = starts[held], chosen[held]
            cells = []
            for name, rate in STREAMS:
                b = measure(test, lambda r: FormerStreamRule(r["threshold"]), rate, args.frames, args.length)[held]
                line = measure(test, lambda r: after_rule(r, st[id(r)], *ch["line"], args.frames), rate,
                               args.frames, args.length)[held]
                now = measure(test, lambda r: after_rule(r, st[id(r)], *ch["now"], args.frames), rate,
                              args.frames, args.length)[held]
                tot[name].append((b, line, now))
                cells.append(" / ".join(f"{fmt(x[0])}-{fmt(x[1])}" for x in (b, line, now)))
            print(f"| {held} ({ch['now'][0]:g}, {ch['now'][1]:g}) | " + " | ".join(cells) + " |")
        cells = []
        for name, _ in STREAMS:
            means = [np.nanmean([x[j] for x in tot[name]], axis=0) for j in range(3)]
            cells.append(" / ".join(f"{fmt1(m[0])}-{fmt1(m[1])}" for m in means))
        print("| **mean** | " + " | ".join(cells) + " |")
        k, w = chosen[None]["now"]
        print(f"\n{shots}-shot (k, bank weight) chosen on all five categories: ({k:g}, {w:g}); shipped "
              f"(runtime.threshold.stream_k, STREAM_BANK_WEIGHT): ({thresholds.stream_k(shots):g}, "
              f"{thresholds.STREAM_BANK_WEIGHT:g}); the line's level alone: k {chosen[None]['line'][0]:g}\n",
              flush=True)


if __name__ == "__main__":
    main()
