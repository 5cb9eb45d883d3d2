"""The thread plan: decided from the usable cores (or --threads), applied to BLAS and OpenCV."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from edge_foct.runtime.threads import apply_plan, library_defaults, plan_threads, set_limits, usable_cores


def _blas_threads() -> set[int]:
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


@pytest.fixture
def restore_limits():
    before_cv = cv2.getNumThreads()
    yield
    set_limits(library_defaults())
    cv2.setNumThreads(before_cv)


def test_default_plan_uses_every_usable_core():
    plan = plan_threads()
    assert plan.cores == usable_cores() == len(os.sched_getaffinity(0))
    assert (plan.engine, plan.blas, plan.engine_inter, plan.opencv, plan.engine_spin) == (plan.cores, 1, 1, 1, False)
    assert f"{plan.cores} usable cores" in plan.source and plan.describe().startswith("threads: engine ")


def test_threads_override_and_bad_values():
    plan = plan_threads(3)
    assert (plan.engine, plan.blas, plan.source) == (3, 1, "--threads 3") and plan.short() == "e3 b1 cv1"
    for bad in (0, -2):
        with pytest.raises(ValueError, match="threads must be >= 1"):
            plan_threads(bad)
    lib = library_defaults()
    assert lib.engine == 0 and lib.engine_spin and lib.blas == lib.opencv == lib.cores and "lib+spin" in lib.short()


def test_apply_sets_blas_and_opencv_and_logs_one_line(restore_limits, caplog):
    np.ones((64, 64)) @ np.ones((64, 64))  # BLAS is loaded
    with caplog.at_level("INFO", logger="edge_foct"):
        libs = apply_plan(plan_threads(1))
    assert _blas_threads() == {1} and cv2.getNumThreads() == 1
    assert libs and all("1 threads" in lib for lib in libs)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("threads: ")]
    assert len(lines) == 1 and "BLAS 1" in lines[0] and "--threads 1" in lines[0]
    set_limits(library_defaults())
    assert _blas_threads() == {library_defaults().blas}
