"""Every CUDA kernel executed in numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) against the NumPy reference.

The simulator must be switched on before numba.cuda is imported, so the cases run in a child
process (kernel_cases.py). What this proves: indexing, tiling, ragged edges, reductions and the
host-side launch code agree with the reference. What it cannot: speed, races the simulator's
thread scheduling does not expose, and the GPU's float32 intrinsics (test_kernels_gpu.py does that
on a real GPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import kernel_cases

CASES_FILE = Path(kernel_cases.__file__)


@pytest.fixture(scope="module")
def sim_results(tmp_path_factory) -> dict[str, str]:
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (the `gpu` extra)")
    out = tmp_path_factory.mktemp("cudasim") / "results.json"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    res = subprocess.run([sys.executable, str(CASES_FILE), str(out)], env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", sorted(kernel_cases.CASES))
def test_kernel_matches_reference_in_simulator(sim_results, case):
    assert sim_results[case] == "ok", sim_results[case]
