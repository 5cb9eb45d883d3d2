"""The compute backend is chosen once, logged once, and never pretends: auto takes CUDA only with a real GPU."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from edge_foct.runtime import adamw, ct_step, sinkhorn, transport
from edge_foct.runtime.compute_backend import decide, select_backend
from edge_foct.runtime.cuda import probe
from edge_foct.runtime.errors import EdgeFoctError, GpuError

HAS_GPU = probe.numba_cuda()[1]


def test_numpy_backend_is_the_reference(caplog):
    with caplog.at_level(logging.INFO, logger="edge_foct.runtime.compute_backend"):
        backend = select_backend("numpy")
    assert backend.name == "numpy"
    assert backend.sinkhorn_log is sinkhorn.sinkhorn_log and backend.adamw_step is adamw.adamw_step
    assert backend.soft_nn_scores is transport.soft_nn_scores
    assert backend.ct_step is ct_step.ct_step and backend.fit_navigator is transport.fit_navigator
    assert backend.navigator_distances is ct_step.navigator_distances
    assert [r.getMessage() for r in caplog.records] == ["compute backend: numpy reference (asked for)"]


def test_unknown_choice_is_refused():
    with pytest.raises(EdgeFoctError, match="'gpu'"):
        decide("gpu")


@pytest.mark.skipif(HAS_GPU, reason="a CUDA GPU is present: auto picks it")
def test_without_a_gpu_auto_is_numpy_and_cuda_is_refused():
    assert select_backend("auto").name == "numpy"
    with pytest.raises(GpuError, match="compute backend 'cuda' asked for"):
        select_backend("cuda")


def test_simulator_only_when_asked_for():
    pytest.importorskip("numba", reason="numba-cuda (the gpu extra) runs the CUDA simulator")
    code = ("from edge_foct.runtime.compute_backend import select_backend as s\n"
            "from edge_foct.runtime.cuda import ct_step, soft_nn\n"
            "c = s('cuda'); a = s('auto')\n"
            "print(c.name, a.name, c.soft_nn_scores is soft_nn.soft_nn_scores, 'SIMULATOR' in c.description,\n"
            "      c.ct_step is ct_step.ct_step and c.fit_navigator is ct_step.fit_navigator)\n")
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"},
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["cuda", "numpy", "True", "True", "True"]


def test_the_distance_gemm_moves_only_beside_openvino():
    from edge_foct.runtime.compute_backend import distance_runtime

    assert distance_runtime("numpy", "openvino") == "openvino"
    assert distance_runtime("numpy", "onnxruntime") == "numpy"
    assert distance_runtime("cuda", "openvino") == "cuda"  # a GPU backend keeps its kernels
    assert distance_runtime("cuda", "tensorrt") == "cuda"
