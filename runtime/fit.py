"""Fit: support images -> features (+ foreground masks) -> method memory + threshold -> Bank."""

from __future__ import annotations

import datetime as dt
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from tqdm import tqdm

from edge_foct import __version__

from . import threshold as thresholds
from .augment import jitter_views
from .backbone import Backbone
from .bank import Bank
from .config import Config
from .errors import EdgeFoctError
from .foreground_judge import ForegroundDecision, JudgeParams, judge
from .methods import METHODS, make_params, method_class
from .preprocess import Preprocessor
from .support_augment import support_augment

#: crop (crop, crop, 3) uint8 -> (crop, crop) bool foreground mask, plus the rule that applied
ForegroundFn = Callable[[np.ndarray], tuple[np.ndarray, str]]


def embed(backbone: Backbone, pre: Preprocessor, images: Iterable[np.ndarray], batch: int = 4) -> np.ndarray:
    """N >= 1 RGB images -> (N, Q, D) float32 patch features, in batches of ``batch``."""
    out, buf = [], []
    for img in images:
        buf.append(pre.crop_rgb(img))
        if len(buf) == batch:
            out.append(backbone.features(pre.normalise(np.stack(buf))))
            buf = []
    if buf:
        out.append(backbone.features(pre.normalise(np.stack(buf))))
    f = np.concatenate(out)  # (N, h, w, D)
    return f.reshape(f.shape[0], -1, f.shape[-1])


class FeatureSource(Protocol):
    """Where ``fit_bank`` gets patch features: the backbone itself (``Embedder``: fit, demo, serve,
    bench) or a cache keyed by the images' sources (eval's ``FeatureStore``). Both must give the
    features ``embed`` would give for the same images and the same preprocessing."""

    pre: Preprocessor

    def support(self, images: Sequence[np.ndarray], keys: Sequence[Any]) -> np.ndarray:
        """N images (the support and its augmented copies) and their cache keys -> (N, Q, D)."""

    def views(self, image: np.ndarray, source: Any, n: int, seed: int) -> np.ndarray:
        """One image -> (n, Q, D) features of its ``jitter_views(image, n, seed)``."""


@dataclass
class Embedder:
    """The FeatureSource that runs the backbone on every call."""

    backbone: Backbone
    pre: Preprocessor

    def support(self, images: Sequence[np.ndarray], keys: Sequence[Any] = ()) -> np.ndarray:
        return embed(self.backbone, self.pre, images)

    def views(self, image: np.ndarray, source: Any, n: int, seed: int) -> np.ndarray:
        return embed(self.backbone, self.pre, jitter_views(image, n, seed=seed))


def mask_to_grid(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(H, W) bool -> (h*w,) bool, nearest neighbour (the authors' code does the same)."""
    small = cv2.resize(mask.astype(np.uint8), (grid[1], grid[0]), interpolation=cv2.INTER_NEAREST)
    return small.reshape(-1).astype(bool)


def default_foreground() -> ForegroundFn:
    """The estimator a foreground method gets when the caller names none."""
    from .foreground import make_foreground

    return make_foreground()


def support_masks(images: Sequence[np.ndarray], pre: Preprocessor,
                  foreground: ForegroundFn) -> tuple[np.ndarray, list[str]]:
    """K support images -> (K, h*w) bool foreground rows on the patch grid, and the rule per image."""
    rows, rules = [], []
    for img in images:
        mask, rule = foreground(pre.crop_rgb(img))  # (crop, crop) bool
        rows.append(mask_to_grid(mask, pre.grid))
        rules.append(rule)
    return np.stack(rows), rules


def support_foreground(images: Sequence[np.ndarray], pre: Preprocessor, foreground: ForegroundFn,
                       features: np.ndarray | None = None,
                       judge_params: JudgeParams | None = None) -> tuple[np.ndarray | None, list[str], ForegroundDecision]:
    """The one place a foreground method's support masks are made and judged (fit_bank and eval).

    K support images, their (K, Q, D) patch features -> the (K, Q) bool grid masks when the judge
    (runtime/foreground_judge.py) keeps the fg/bg split, else None (oct's memory), the estimator's
    rule per image, and the decision with its readings."""
    crops = [pre.crop_rgb(img) for img in images]
    masks, rules = zip(*(foreground(c) for c in crops)) if crops else ((), ())
    grid = np.stack([mask_to_grid(m, pre.grid) for m in masks])  # (K, Q) as support_masks gives
    decision = judge(list(crops), list(masks), grid, list(rules), features, foreground,
                     judge_params or JudgeParams())
    return (grid if decision.use_split else None), list(rules), decision


#: jittered views over all support images at most (a large support gets fewer views per image)
MAX_TOTAL_VIEWS = 64


def views_per_image(views: int, k: int) -> int:
    """The configured views per support image, cut so that K x V <= MAX_TOTAL_VIEWS (at least 1)."""
    return max(1, min(views, math.ceil(MAX_TOTAL_VIEWS / k)))


def fit_bank(backbone: Backbone, images: Sequence[np.ndarray], config: Config,
             sources: Sequence[str] = (), foreground: ForegroundFn | None = None,
             extra_manifest: dict[str, Any] | None = None, calibration: Sequence[np.ndarray] = (),
             max_false_alarms: float | None = None, calibration_sources: Sequence[str] = (),
             progress: bool = False, features: FeatureSource | None = None,
             judge_params: JudgeParams | None = None) -> Bank:
    """images: K RGB uint8 support images (any size) -> a Bank ready to save. K = 0 for a
    ``zero_shot`` method (threshold rule ``zero-shot-prior``).

    The one function that fits a bank, for every command: fit, demo, serve's demo bank, bench and
    eval (which passes its feature cache as ``features``; the default embeds with ``backbone``).
    It owns the foreground decision, the threshold calibration and the manifest.
    ``config.support.augment`` adds turned / mirrored copies of the support images to the memory
    (runtime/support_augment.py: masks, threshold and manifest follow it).
    A method that uses the foreground (foct) always gets masks: from ``foreground`` when given,
    else from the default estimator (runtime/foreground.py's ``make_foreground``), judged by
    runtime/foreground_judge.py (``judge_params``; None: the defaults) before they are used.
    features: where the (K * A, Q, D) support features and the threshold's views come from
    (``FeatureSource``; None: ``Embedder``, the backbone).
    calibration: extra good images (not in the memory, no labels) scored against the full memory;
    with at least ``threshold.MIN_CALIBRATION`` of them the threshold rule reads their scores.
    max_false_alarms: a false-alarm budget (0.05 = 5 %) instead of the default rule."""
    pre = backbone.preprocessor(config.input.resize, config.input.crop, aspect=config.input.aspect)
    cls = method_class(config.method.name)
    params = make_params(config.method.name, config.method.params, config.method.preset)
    if not images and not cls.zero_shot:
        raise EdgeFoctError(f"method {cls.name!r} needs at least 1 support image (zero-shot methods: "
                            f"{sorted(n for n, c in METHODS.items() if c.zero_shot)})")
    source = features or Embedder(backbone, pre)
    if (source.pre.grid, source.pre.crop_hw) != (pre.grid, pre.crop_hw):
        raise EdgeFoctError(f"features on a {source.pre.grid} grid, the config asks for {pre.grid}")
    keys = list(sources) or [None] * len(images)
    aug = support_augment(config.support.augment, pre.aspect)  # K images -> K * A memory images
    q = pre.grid[0] * pre.grid[1]
    feats = source.support(aug.images(images), aug.keys(keys)) if images else \
        np.zeros((0, q, backbone.info.feature_dim), np.float32)  # (K * A, Q, D), source-major, originals first
    fg, fg_rules, decision = None, [], None
    if cls.uses_foreground and images:  # masks and the judge on the K originals; copies get theirs turned along
        fg, fg_rules, decision = support_foreground(images, pre, foreground or default_foreground(),
                                                    feats[::len(aug)], judge_params)
    support = aug.support_set(feats, fg, pre.grid, backbone.side_arrays())  # (K * A, Q, D)
    method = cls.fit(support, params)
    if config.threshold.value is not None:
        thr = thresholds.override(config.threshold.value)
    elif not images:
        thr = thresholds.zero_shot_prior()
    else:
        v = views_per_image(config.threshold.views, len(images))

        def views_of(i: int) -> np.ndarray:  # (V, Q, D), computed when calibrate reaches image i
            return source.views(images[i], keys[i], v, seed=config.threshold.seed + i)

        with tqdm(total=len(images), desc="fit: threshold", unit="img", file=sys.stderr,
                  disable=not progress) as bar:
            thr = thresholds.calibrate(config.method.name, params, support, views_of, progress=bar.update)
        cal_scores = [float(method.score(f, update=False).scores.max())
                      for f in (embed(backbone, pre, calibration) if len(calibration) else ())]  # (n,)
        thr = thresholds.finalise(thr, len(images), cal_scores, max_false_alarms)
    manifest = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "edge_foct_version": __version__,
        "backbone": backbone.info.to_json(),
        "input": {"resize": pre.resize, "crop": pre.crop, "aspect": pre.aspect, "stride": pre.stride},
        "grid": list(pre.grid),
        "method": {"name": cls.name, "preset": config.method.preset, "params": _json_params(params)},
        "threshold": thr.to_json(),
        "support": [{"path": str(Path(s)), **({"foreground_rule": r} if r else {})}
                    for s, r in zip(list(sources) or [f"image{i}" for i in range(len(images))],
                                    fg_rules or [None] * len(images))],
        **({"foreground": decision.to_json()} if decision is not None else {}),
        "config": config.to_json(),
        "augment": {**aug.to_json(), "memory_images": int(feats.shape[0])},
        **({"calibration": [str(Path(s)) for s in calibration_sources]} if len(calibration_sources) else {}),
        **(extra_manifest or {}),
    }
    return Bank(manifest, method.arrays())


def _json_params(params: Any) -> dict[str, Any]:
    import dataclasses

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(params).items()}
