"""The runs of one category (shots x method x split) on ``jobs`` worker processes.

Each run (run_split + split_metrics) depends only on the category's features, which the parent
computes first (test images, support images and their jittered views: ``prepare``), so the
workers are forked after that and read the features copy-on-write: no backbone runs in a worker
and nothing large is sent between processes (a run returns its metrics and, for split 0, its image
scores for the plot). Workers limit BLAS to one thread each (threadpoolctl), so
``jobs`` processes use ``jobs`` cores. ``jobs = 1`` runs everything in this process.

Results do not depend on ``jobs`` beyond float rounding: every run is seeded by (seed, shots, split)
and each online method sees its own stream from a fresh fit.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_foct.edge_app.datasets.mvtec import Category
from edge_foct.edge_app.evaluation.protocol import (
    FeatureStore,
    MethodSpec,
    PixelTruth,
    draw_split,
    run_split,
    split_metrics,
)
from edge_foct.runtime.fit import views_per_image
from edge_foct.runtime.image_io import read_image
from edge_foct.runtime.methods import method_class
from edge_foct.runtime.support_augment import support_augment


@dataclass(frozen=True)
class Task:
    shots: int
    spec: MethodSpec
    split: int
    index: int = 0  # the spec's position in the run's method list (a method may be listed twice)


@dataclass
class TaskResult:
    task: Task
    metrics: dict[str, Any]
    foreground_rules: dict[str, int]  # rule -> support images it decided (methods using masks)
    image_scores: np.ndarray | None  # (N,) split 0 only, for the plot
    threshold: float
    threshold_rule: str = ""  # the rule that learnt it (the online methods' admission gate too)


@dataclass
class Context:
    """What every run of one category reads (inherited by forked workers, never pickled)."""

    category: Category
    store: FeatureStore
    truth: PixelTruth | None
    labels: np.ndarray  # (N,) bool
    seed: int
    views: int
    pro_limit: float
    foreground: Callable[[np.ndarray], tuple[np.ndarray, str]] | None


_CONTEXT: Context | None = None  # set in the parent before the pool forks


def default_jobs() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def prepare(ctx: Context, tasks: list[Task]) -> None:
    """Compute every feature the runs will read (test images, supports and their augmented copies,
    support views) here."""
    store, cat = ctx.store, ctx.category
    store.ensure([t.path for t in cat.test])
    for shots, split, augment in dict.fromkeys((t.shots, t.split, t.spec.augment) for t in tasks):
        support, _ = draw_split(cat, shots, split, ctx.seed)
        images = [read_image(p) for p in support]
        aug = support_augment(augment, store.pre.aspect)
        if support:  # zero-shot (K = 0): no support features
            store.support(aug.images(images), aug.keys(support))  # the keys fit_bank asks for
        for i, p in enumerate(support):
            store.views(images[i], p, views_per_image(ctx.views, shots), seed=ctx.seed + i)


def run_task(task: Task, ctx: Context | None = None) -> TaskResult:
    ctx = ctx or _CONTEXT
    assert ctx is not None, "run_task outside a prepared context"
    fg = ctx.foreground if method_class(task.spec.name).uses_foreground else None
    r = run_split(ctx.category, ctx.store, task.spec, task.shots, task.split, ctx.seed, foreground=fg,
                  views=ctx.views)
    m = split_metrics(r, ctx.labels, ctx.truth, ctx.store.pre.crop_hw, ctx.pro_limit)
    return TaskResult(task, m, dict(Counter(r.foreground_rules)), r.image_scores if task.split == 0 else None,
                      r.threshold, r.threshold_rule)


def _worker_init() -> None:
    """A forked worker: one BLAS thread, and the methods' maths on NumPy. The parent's OpenVINO
    objects (the distance GEMM and the edge transport step, runtime/engines/openvino_distance.py and
    openvino_transport.py) are not used after a fork: OpenVINO's thread pool does not survive one.
    NumPy gives the same numbers (float rounding)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if _CONTEXT is not None:
        _CONTEXT.store.compute = None


def run_tasks(ctx: Context, tasks: list[Task], jobs: int) -> Iterator[TaskResult]:
    """Yields the results as runs finish (any order). jobs > 1: forked workers (POSIX)."""
    global _CONTEXT
    prepare(ctx, tasks)
    if jobs <= 1 or len(tasks) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for t in tasks:
            yield run_task(t, ctx)
        return
    _CONTEXT = ctx
    try:
        with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=multiprocessing.get_context("fork"),
                                 initializer=_worker_init) as pool:
            # the most expensive runs first (more shots, a larger memory), so the pool drains evenly
            order = sorted(tasks, key=lambda t: -t.shots)
            for fut in as_completed([pool.submit(run_task, t) for t in order]):
                yield fut.result()
    finally:
        _CONTEXT = None
