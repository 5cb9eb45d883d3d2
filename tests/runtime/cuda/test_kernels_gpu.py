"""The same kernel cases on a real CUDA GPU, in this process. Skipped, with the reason, without one:
a green CPU run never claims GPU coverage (the simulator's results are in test_kernels_sim.py)."""

from __future__ import annotations

import pytest

from edge_foct.runtime.cuda import probe

from . import kernel_cases

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu() -> None:
    _, usable, reason = probe.numba_cuda()
    if not usable:
        pytest.skip(f"needs a CUDA GPU usable by numba-cuda: {reason}")


@pytest.mark.parametrize("case", sorted(kernel_cases.CASES))
def test_kernel_matches_reference_on_gpu(gpu, case):
    kernel_cases.CASES[case]()


def test_ct_step_production_tiles_on_gpu(gpu):
    """The CT kernels at their production geometry (256 threads, 8 x 8 pair tiles, hidden2 <= 256),
    which the simulator is too slow to run: ragged sizes, several blocks, the authors' hidden2."""
    import numpy as np

    from edge_foct.runtime import transport
    from edge_foct.runtime.ct_step import ct_step as ref
    from edge_foct.runtime.cuda import ct_step as gpu_ct

    for m, q, d, hidden in ((70, 130, 100, (100, 40)), (9, 200, 67, (130, 256))):
        mem, qry, nav = kernel_cases._ct_problem(m, q, d, hidden, seed=m, scale=2.0)
        kernel_cases._check_ct(gpu_ct.ct_step(mem, qry, nav, 0.5), ref(mem, qry, nav, 0.5))
    cost = transport.cost_matrix(mem, qry)
    want_nav = {k: v.copy() for k, v in nav.items()}
    want = transport.fit_navigator(cost, mem, qry, want_nav, 3, lr=1e-3)
    got = gpu_ct.fit_navigator(cost, mem, qry, nav, 3, lr=1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-4)
