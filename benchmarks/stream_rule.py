"""`serve`'s stream rule on replayed streams: the former rule against calibration from the first N frames.

Reads the scores that ``benchmarks/threshold_loco.py collect`` stored (every test image's score
for every category, method, shots and split of the eval protocol) and replays streams made of them:

- per run, the test set's good images and defects are each split in half (seeded): the first
  ``--frames`` frames of a stream are drawn from halves A, the rest (``--length`` - frames) from
  halves B, so no frame judged after calibration is an image the calibration saw;
- three streams: good parts only, 5 % defects, 30 % defects (defects drawn at that rate);
- "before": the former rule (median + 3 x 1.4826 MAD of the frames judged good, warm-up 20, window
  256, within [floor, ceiling]) started from the bank's fit-time threshold; "after": the threshold
  `edge-foct fit` now writes, then ``StreamThreshold`` (calibrated from the first N frames, held).

Cells: false alarms / misses (%) over the frames after the first N (the same frames for both
rules), mean over methods, shots and splits. k (robust sigmas of the log scores) is chosen leave-
one-category-out on the 5 % streams: for each category on the other four, as the table says.

    python benchmarks/stream_rule.py --cache threshold-loco-cache
"""

from __future__ import annotations

import argparse
import json
import math
from collections import deque
from pathlib import Path

import numpy as np

from edge_foct.runtime import threshold as thresholds

STREAMS = (("good only", 0.0), ("5 % defects", 0.05), ("30 % defects", 0.30))
K_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)


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


def after_rule(run: dict, k: float, frames: int) -> thresholds.StreamThreshold:
    fitted = thresholds.finalise(run["threshold"], run["shots"])
    return thresholds.StreamThreshold(fitted, thresholds.StreamParams(frames=frames, k=k))


def measure(runs: list[dict], make, rate: float, frames: int, length: int) -> dict[str, tuple[float, float]]:
    """category -> mean (false-alarm rate, miss rate) after the first ``frames`` frames."""
    out: dict[str, list] = {}
    for i, r in enumerate(runs):
        scores, labels = make_stream(r, rate, frames, length, seed=i)
        out.setdefault(r["category"], []).append(rates(replay(make(r), scores), labels, frames))
    return {c: tuple(np.nanmean(np.array(v, float), axis=0)) for c, v in out.items()}


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from threshold_loco import load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("threshold-loco-cache"))
    ap.add_argument("--frames", type=int, default=thresholds.StreamParams.frames)
    ap.add_argument("--length", type=int, default=400)
    ap.add_argument("--shots", nargs="*", type=int, default=[2])
    args = ap.parse_args()
    runs = [r for r in load(args.cache) if r["shots"] in args.shots]
    cats = sorted({r["category"] for r in runs})
    meta = json.loads((args.cache / "meta.json").read_text())
    def err(per: dict) -> float:  # the fit rule's objective: mean (false alarms + misses) + 2 x false alarms above 25 %
        return float(np.mean([fa + (0 if math.isnan(m) else m) for fa, m in per.values()])
                     + 2.0 * sum(max(0.0, fa - 0.25) for fa, _ in per.values()))
    chosen = {}
    for held in cats:
        others = [r for r in runs if r["category"] != held]
        chosen[held] = min(K_GRID, key=lambda k: err(measure(others, lambda r: after_rule(r, k, args.frames),
                                                             0.05, args.frames, args.length)))
    print(f"Replayed streams, {', '.join(map(str, args.shots))}-shot, methods "
          f"{', '.join(dict.fromkeys(r['method'] for r in runs))}, backbone {meta['backbone']['id']}; "
          f"{args.length} frames, calibration from the first {args.frames}; false alarms / misses (%) after them.\n")
    print("| category (k chosen on the other four) | " + " | ".join(f"{n}: before -> after" for n, _ in STREAMS) + " |")
    print("|---" * (1 + len(STREAMS)) + "|")
    tot = {n: [] for n, _ in STREAMS}
    for held in cats:
        test = [r for r in runs if r["category"] == held]
        cells = []
        for name, rate in STREAMS:
            b = measure(test, lambda r: FormerStreamRule(r["threshold"]), rate, args.frames, args.length)[held]
            a = measure(test, lambda r: after_rule(r, chosen[held], args.frames), rate, args.frames, args.length)[held]
            tot[name].append((b, a))
            fmt = lambda x: "–" if math.isnan(x) else f"{x * 100:.0f}"  # noqa: E731
            cells.append(f"{fmt(b[0])} / {fmt(b[1])} -> {fmt(a[0])} / {fmt(a[1])}")
        print(f"| {held} (k {chosen[held]:g}) | " + " | ".join(cells) + " |")
    cells = []
    for name, _ in STREAMS:
        b = np.nanmean([x[0] for x in tot[name]], axis=0)
        a = np.nanmean([x[1] for x in tot[name]], axis=0)
        fmt = lambda x: "–" if math.isnan(x) else f"{x * 100:.1f}"  # noqa: E731
        cells.append(f"{fmt(b[0])} / {fmt(b[1])} -> {fmt(a[0])} / {fmt(a[1])}")
    print("| **mean** | " + " | ".join(cells) + " |")
    k_all = min(K_GRID, key=lambda k: err(measure(runs, lambda r: after_rule(r, k, args.frames), 0.05,
                                                  args.frames, args.length)))
    print(f"\nk chosen on all five categories (runtime.threshold.STREAM_K): {k_all:g}")


if __name__ == "__main__":
    main()
