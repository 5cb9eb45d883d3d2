"""The few-shot protocol, shared by `edge-foct eval` and the accuracy benchmarks.

Per category and split: draw k support images from train/good (seeded); fit each method on the
same support features through ``runtime.fit.fit_bank`` (the function `edge-foct fit` calls: the
same foreground decision, threshold from normal images only, and manifest); then stream the test
images through the bank's method in one fixed shuffled order (online methods see each image once,
in order, and learn from it). Raw scores only: nothing is normalised over the test set.

Features are computed once per image per run (``FeatureStore``) and shared by every method, so
methods differ only in what they do with the same patch features.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_foct.edge_app.datasets.mvtec import Category
from edge_foct.edge_app.evaluation.metrics import auroc, f1_max, oracle_threshold, pixel_metrics, region_weights
from edge_foct.runtime import threshold as thresholds
from edge_foct.runtime.anomaly_map import anomaly_map
from edge_foct.runtime.augment import jitter_views
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.bank import Bank
from edge_foct.runtime.compute_backend import Backend
from edge_foct.runtime.config import Config
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.fit import ForegroundFn, fit_bank
from edge_foct.runtime.foreground_judge import JudgeParams
from edge_foct.runtime.image_io import read_image, read_mask
from edge_foct.runtime.preprocess import Preprocessor
from edge_foct.runtime.threshold import Threshold


class FeatureStore:
    """Patch features (Q, D) float32 per image path (and per jittered view), computed once."""

    def __init__(self, backbone: Backbone, pre: Preprocessor, batch: int = 8,
                 progress: Callable[[int], None] | None = None, compute: Backend | None = None) -> None:
        self.backbone, self.pre, self.batch = backbone, pre, batch
        #: what the methods' maths runs on, as serve decides it beside this backbone's engine (None: NumPy)
        self.compute = compute
        self._feats: dict[Any, np.ndarray] = {}
        self.progress = progress

    def _embed(self, keys: list[Any], load: Callable[[Any], np.ndarray]) -> None:
        todo = [k for k in keys if k not in self._feats]
        for s in range(0, len(todo), self.batch):
            chunk = todo[s:s + self.batch]
            x = self.pre.normalise(np.stack([self.pre.crop_rgb(load(k)) for k in chunk]))
            f = self.backbone.features(x)  # (B, h, w, D)
            for k, fk in zip(chunk, f.reshape(f.shape[0], -1, f.shape[-1])):
                self._feats[k] = fk
            if self.progress:
                self.progress(len(chunk))

    def features(self, paths: list) -> np.ndarray:
        """-> (N, Q, D)."""
        self._embed(list(paths), read_image)
        return np.stack([self._feats[p] for p in paths])

    def ensure(self, paths: list) -> None:
        """Compute the features of ``paths`` now (so a progress bar covers them)."""
        self._embed(list(paths), read_image)

    def __getitem__(self, path) -> np.ndarray:
        """(Q, D) features of one image path, without stacking copies of a whole test set."""
        if path not in self._feats:
            self._embed([path], read_image)
        return self._feats[path]

    def support(self, images: Sequence[np.ndarray], keys: Sequence[Any]) -> np.ndarray:
        """``runtime.fit.FeatureSource``: features of the support images (originals and their turned /
        mirrored copies, runtime/support_augment.py) -> (N, Q, D), each cached under its key (a path,
        or ("augment", path, transform) for a copy); ``images`` are embedded only for keys not cached."""
        keys = list(keys)
        if any(k not in self._feats for k in keys):
            by_key = dict(zip(keys, images))
            self._embed(keys, by_key.__getitem__)
        return np.stack([self._feats[k] for k in keys])

    def views(self, image: np.ndarray | None, source: Any, n: int, seed: int) -> np.ndarray:
        """Features of n jittered views of one image (read from ``source`` when ``image`` is None)
        -> (n, Q, D); ``runtime.fit.FeatureSource``."""
        keys = [("view", source, seed, i) for i in range(n)]
        if any(k not in self._feats for k in keys):
            imgs = jitter_views(read_image(source) if image is None else image, n, seed=seed)
            self._embed(keys, lambda k: imgs[k[3]])
        return np.stack([self._feats[k] for k in keys])


@dataclass(frozen=True)
class MethodSpec:
    """A method to evaluate: name, preset, parameter overrides, support augmentation
    (runtime/support_augment.py); ``label`` names it in tables (``patchcore@rot90``)."""

    name: str
    preset: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    augment: str = "none"

    @property
    def label(self) -> str:
        return self.name + (f"/{self.preset}" if self.preset else "") + \
            (f"@{self.augment}" if self.augment != "none" else "")


@dataclass
class SplitResult:
    """One method on one split. Arrays follow the test set's own order (not the stream order)."""

    method: str
    split: int
    image_scores: np.ndarray  # (N,)
    patch_scores: np.ndarray  # (N, h, w)
    threshold: float
    diagnostics: list[dict]  # per test image, in test-set order
    seconds_per_image: float
    stream_flags: np.ndarray | None = None  # (N,) bool: the stream rule's verdict when the image came
    foreground: dict | None = None  # the foreground judge's decision (runtime/foreground_judge.py), JSON
    foreground_rules: list[str] = field(default_factory=list)  # the estimator's rule per support image
    threshold_rule: str = ""  # the rule that learnt the threshold (runtime/threshold.py): also the online gate


def draw_split(category: Category, shots: int, split: int, seed: int) -> tuple[list, np.ndarray]:
    """Support paths and the stream order of test indices for one split (shared by every method).

    The support sets of splits 0, 1, ... are drawn in turn without repeats: a set already drawn
    by an earlier split is drawn again (up to a bound) while another set is possible, so five
    splits are five different support sets whenever the category has that many.
    """
    n = len(category.train)
    possible = math.comb(n, shots)
    seen: set[tuple[int, ...]] = set()
    for s in range(split + 1):
        rng = np.random.default_rng([seed, s, shots])
        for _ in range(1000):
            idx = tuple(sorted(int(i) for i in rng.choice(n, shots, replace=False)))
            if idx not in seen or len(seen) >= possible:
                break
        seen.add(idx)
    support = [category.train[i] for i in idx]
    return support, rng.permutation(len(category.test))


def limit_test_set(category: Category, max_test: int | None, seed: int) -> Category:
    """The category with at most ``max_test`` of its test images (`edge-foct eval --max-test N`):
    a seeded subset balanced per label, ``N // 2`` good and ``N - N // 2`` defective images, each
    label drawn by its own seeded permutation (``seed`` = eval's --seed); when a label has fewer
    images than its share, all of them are kept and the other label fills up to N. The kept images
    stay in the test set's order, and every method, shots and split of the run scores the same ones.
    Unchanged when ``max_test`` is None or not below the test set's size."""
    n = len(category.test)
    if max_test is None or max_test >= n:
        return category
    if max_test < 2:
        raise EdgeFoctError(f"--max-test {max_test}: give at least 2 (one good and one defective image)")
    idx = {lab: np.flatnonzero([t.defective == lab for t in category.test]) for lab in (False, True)}
    good = min(len(idx[False]), max(max_test // 2, max_test - len(idx[True])))  # fills in for few defects
    take = {False: good, True: min(len(idx[True]), max_test - good)}
    keep = []
    for lab in (False, True):
        rng = np.random.default_rng([seed, n, int(lab), 7])
        keep += rng.permutation(idx[lab])[:take[lab]].tolist()
    return dataclasses.replace(category, test=tuple(category.test[i] for i in sorted(keep)))


def test_set_counts(category: Category) -> tuple[int, int]:
    """(good, defective) test images of a category."""
    bad = sum(t.defective for t in category.test)
    return len(category.test) - bad, bad


def fit_split(category: Category, store: FeatureStore, spec: MethodSpec, shots: int, split: int, seed: int,
              foreground: ForegroundFn | None = None, views: int = 8, judge: JudgeParams | None = None) -> Bank:
    """The bank ``edge-foct fit`` would write for this split's support: the same ``fit_bank``
    (foreground decision, threshold, manifest), fed from the feature cache."""
    support_paths, _ = draw_split(category, shots, split, seed)
    config = Config().replace(method={"name": spec.name, "preset": spec.preset, "params": dict(spec.params)},
                              input={"resize": store.pre.resize, "crop": store.pre.crop, "aspect": store.pre.aspect},
                              threshold={"views": views, "seed": seed}, support={"augment": spec.augment})
    return fit_bank(store.backbone, [read_image(p) for p in support_paths], config, sources=support_paths,
                    foreground=foreground, features=store, judge_params=judge)


def run_split(category: Category, store: FeatureStore, spec: MethodSpec, shots: int, split: int, seed: int,
              foreground: ForegroundFn | None = None, views: int = 8, judge: JudgeParams | None = None) -> SplitResult:
    """One method on one split: ``fit_split``'s bank, then the test set streamed through it in the
    split's order, as ``serve`` would see it."""
    _, order = draw_split(category, shots, split, seed)
    bank = fit_split(category, store, spec, shots, split, seed, foreground, views, judge)
    learnt = Threshold.from_json(bank.manifest["threshold"])
    thr = learnt.value
    method = bank.make_method()
    if store.compute is not None:
        method.use_backend(store.compute)
    method.set_gate(thr)
    # the verdicts `edge-foct serve` would give: the stream rule from the learnt threshold, fed the
    # stream's scores in order (the online methods' gate stays at the learnt threshold here)
    stream = (thresholds.StreamThreshold(learnt, thresholds.StreamParams(k=thresholds.stream_k(shots)))
              if learnt.floor is not None else None)
    store.ensure([t.path for t in category.test])
    n = len(category.test)
    scores, patches, diags = np.zeros(n), np.zeros((n, *store.pre.grid), np.float32), [{}] * n
    flags = np.zeros(n, bool)
    t0 = time.perf_counter()
    for i in order:  # the stream
        r = method.score(store[category.test[i].path], update=True)  # (Q, D) -> scores (Q,)
        patches[i] = r.scores.reshape(store.pre.grid)
        scores[i] = float(r.scores.max())
        diags[i] = r.diagnostics
        if stream is not None:
            flags[i] = thresholds.is_defective(scores[i], stream.value)
            stream.update(scores[i])
    dt = (time.perf_counter() - t0) / n
    rules = [s["foreground_rule"] for s in bank.manifest["support"] if "foreground_rule" in s]
    return SplitResult(spec.label, split, scores, patches, thr, diags, dt, flags if stream is not None else None,
                       bank.manifest.get("foreground"), rules, learnt.rule)


def ground_truth(category: Category, pre: Preprocessor) -> list[np.ndarray | None]:
    """Per test image: (crop_h, crop_w) bool mask aligned with the maps; zeros for good images;
    None for a defective image without a usable mask (missing, or all zero)."""
    out = []
    for t in category.test:
        if not t.defective:
            out.append(np.zeros(pre.crop_hw, bool))
        elif t.mask is None:
            out.append(None)
        else:
            m = pre.crop_mask(read_mask(t.mask, nonzero=t.mask_nonzero))
            out.append(m if m.any() else None)
    return out


def pixel_maps(patch_scores: np.ndarray, crop_hw: tuple[int, int]) -> np.ndarray:
    """(N, h, w) -> (N, crop_h, crop_w) float32 anomaly maps (upsample + blur, as served)."""
    return np.stack([anomaly_map(p, crop_hw) for p in patch_scores])


@dataclass(frozen=True)
class PixelTruth:
    """Ground truth for the pixel metrics of one category, built once and shared by every run."""

    keep: np.ndarray  # (N,) bool: test images scored at pixel level (good ones, and defects with a mask)
    masks: np.ndarray  # (keep.sum(), crop_h, crop_w) bool
    regions: tuple[np.ndarray, int]  # metrics.region_weights(masks)
    skipped: int  # defective images without a usable mask (left out of the pixel metrics only)


def pixel_truth(category: Category, pre: Preprocessor) -> PixelTruth | None:
    """None when the category has no masks at all (pixel metrics are then skipped)."""
    if not category.has_masks:
        return None
    gt = ground_truth(category, pre)
    keep = np.array([g is not None for g in gt])
    masks = np.stack([g for g in gt if g is not None])
    return PixelTruth(keep, masks, region_weights(masks), int((~keep).sum()))


def split_metrics(result: SplitResult, labels: np.ndarray, truth: PixelTruth | None, crop_hw: tuple[int, int],
                  pro_limit: float = 0.3) -> dict[str, Any]:
    """Every metric of one split. labels (N,) bool, test-set order (as ``result``'s arrays).

    Besides the detection metrics: false alarms and misses at the threshold learnt from normal
    images (and their sum, ``error``), the same for the oracle threshold picked on this test set
    itself (``oracle_*``, a floor, not a rule), and under the stream rule that `edge-foct serve` applies (``stream_*``), the method's
    seconds per image, the mean transport concentration when the method reports
    ``concentration``, and how many test images it admitted into its online memory when it
    reports ``admitted`` (an image counts when ``admitted > 0``).
    """
    s = result.image_scores
    flagged = ~(s <= result.threshold)  # fails closed: a NaN score is flagged
    out: dict[str, Any] = {
        "image_auroc": auroc(labels, s), "image_f1_max": f1_max(labels, s),
        "threshold": result.threshold,
        "false_alarm_rate": float(flagged[~labels].mean()) if (~labels).any() else float("nan"),
        "miss_rate": float((~flagged[labels]).mean()) if labels.any() else float("nan"),
        "seconds_per_image": result.seconds_per_image,
    }
    # the learnt threshold's error beside the oracle's (the best threshold on this test set itself)
    out["error"] = out["false_alarm_rate"] + out["miss_rate"]
    o_thr, o_fa, o_miss = oracle_threshold(labels, s)
    out.update(oracle_threshold=o_thr, oracle_false_alarm_rate=o_fa, oracle_miss_rate=o_miss,
               oracle_error=o_fa + o_miss)
    if result.stream_flags is not None:
        sf = result.stream_flags
        out["stream_false_alarm_rate"] = float(sf[~labels].mean()) if (~labels).any() else float("nan")
        out["stream_miss_rate"] = float((~sf[labels]).mean()) if labels.any() else float("nan")
    if truth is not None:
        maps = pixel_maps(result.patch_scores[truth.keep], crop_hw)  # (n, crop_h, crop_w)
        out.update(pixel_metrics(truth.masks, maps, pro_limit, truth.regions))
    diags = result.diagnostics
    conc = [float(d["concentration"]) for d in diags if "concentration" in d]
    if conc:
        out["concentration"] = float(np.mean(conc))
    if result.foreground is not None:  # the judge's decision: 1 = FOCT's fg/bg split, 0 = oct's memory
        read = result.foreground["readings"]
        out["foreground_split_used"] = float(result.foreground["use_split"])
        for key in ("agreement", "stability", "separation"):
            v = read.get(key)
            out[f"foreground_{key}"] = float("nan") if v is None else float(v)
        out["foreground_coverage"] = float(np.mean(read["coverage"])) if read.get("coverage") else float("nan")
    if any("admitted" in d for d in diags):
        adm = np.array([float(d.get("admitted", 0)) > 0 for d in diags])
        out.update(admitted_defective=int(adm[labels].sum()), admitted_good=int(adm[~labels].sum()))
    return out
