"""Every production kernel with its launch signature, for ahead-of-time PTX builds and checks.

``compile_all(cc)`` needs only numba-cuda and libNVVM (no GPU, no driver): it is how the tests
prove the kernels build for Jetson Orin (sm_87) and RTX 30/40 (sm_86, sm_89) on a CPU machine.
"""

from __future__ import annotations

from typing import Callable


def kernel_catalog() -> dict[str, tuple[Callable, str]]:
    """name -> (Python function, numba signature) at the production block and tile sizes."""
    from . import adamw, ct_kernels, sinkhorn, soft_nn_kernels

    sk, sn, ct = sinkhorn.kernels(), soft_nn_kernels.kernels(), ct_kernels.kernels()
    return {
        "softmin_rows": (sk.softmin_rows.py_func, sinkhorn.SIG_SOFTMIN),
        "plan_rows": (sk.plan_rows.py_func, sinkhorn.SIG_PLAN),
        "adamw_kernel": (adamw.adamw_kernel.py_func, adamw.SIG_ADAMW),
        "row_sq_norms": (sn.norms.py_func, soft_nn_kernels.SIG_NORMS),
        "soft_nn_partial": (sn.partial.py_func, soft_nn_kernels.SIG_PARTIAL),
        "soft_nn_merge": (sn.merge.py_func, soft_nn_kernels.SIG_MERGE),
        "ct_forward": (ct.forward.py_func, ct_kernels.SIG_FORWARD),
        "ct_row_stats": (ct.row_stats.py_func, ct_kernels.SIG_ROW_STATS),
        "ct_col_stats": (ct.col_stats.py_func, ct_kernels.SIG_COL_STATS),
        "ct_backward": (ct.backward.py_func, ct_kernels.SIG_BACKWARD),
        "ct_reduce": (ct.reduce.py_func, ct_kernels.SIG_REDUCE),
        "ct_loss": (ct.loss.py_func, ct_kernels.SIG_LOSS),
    }


def compile_all(cc: tuple[int, int]) -> dict[str, str]:
    """name -> PTX text for compute capability ``cc``, e.g. (8, 7)."""
    from numba import cuda

    return {name: cuda.compile_ptx(fn, sig, cc=cc)[0] for name, (fn, sig) in kernel_catalog().items()}
