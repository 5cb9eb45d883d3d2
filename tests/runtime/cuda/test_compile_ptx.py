"""Ahead-of-time builds of every production kernel for Jetson Orin (sm_87) and RTX 30/40 (sm_86,
sm_89), in a separate process, with assertions on the PTX text; then ptxas (when on PATH) for
register use and spills. Needs numba-cuda and libNVVM, not a GPU."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ARCHS = {"sm_86": (8, 6), "sm_87": (8, 7), "sm_89": (8, 9)}
# the kernels with a shared-memory reduction must synchronise; the element-wise ones must not need to
BARRIERS = {"softmin_rows": True, "plan_rows": True, "soft_nn_partial": True, "adamw_kernel": False,
            "row_sq_norms": False, "soft_nn_merge": False, "ct_forward": True, "ct_row_stats": True,
            "ct_col_stats": False, "ct_backward": True, "ct_reduce": False, "ct_loss": True}
THREADS = {"softmin_rows": 128, "plan_rows": 128, "soft_nn_partial": 256, "adamw_kernel": 256,
           "row_sq_norms": 128, "soft_nn_merge": 128, "ct_forward": 256, "ct_row_stats": 128,
           "ct_col_stats": 128, "ct_backward": 256, "ct_reduce": 128, "ct_loss": 128}

CHILD = """
import json, sys
from pathlib import Path
try:
    from edge_foct.runtime.cuda.catalog import compile_all
    out = {}
    for arch, cc in json.loads(sys.argv[2]).items():
        for name, ptx in compile_all(tuple(cc)).items():
            (Path(sys.argv[1]) / f"{name}.{arch}.ptx").write_text(ptx)
            out.setdefault(arch, []).append(name)
    print(json.dumps({"built": out}))
except Exception as e:  # report why (e.g. libNVVM missing) to the parent, which decides to skip
    print(json.dumps({"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}))
"""


@pytest.fixture(scope="module")
def ptx_dir(tmp_path_factory):
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (the `gpu` extra)")
    out = tmp_path_factory.mktemp("ptx")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    # one child per architecture, side by side: numba's front end (seconds per kernel) runs per build
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(out), json.dumps({arch: cc})], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for arch, cc in ARCHS.items()]
    for child in children:
        stdout, stderr = child.communicate(timeout=600)
        assert child.returncode == 0, stderr[-3000:]
        report = json.loads(stdout.strip().splitlines()[-1])
        if "error" in report:
            if "NVVM" in report["error"] or "nvvm" in report["error"]:
                pytest.skip(f"libNVVM not found ({report['error']}): install the CUDA toolkit or "
                            f"`pip install 'cuda-toolkit[nvvm]'`")
            if "driver init" in report["error"]:  # a CUDA driver library that is present but cannot start
                pytest.skip(f"the CUDA driver cannot start here ({report['error']})")
            pytest.fail(report["error"])
    return out


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("name", sorted(BARRIERS))
def test_kernel_builds_ptx(ptx_dir, arch, name):
    ptx = (ptx_dir / f"{name}.{arch}.ptx").read_text()
    assert re.search(rf"^\.target {arch}\b", ptx, re.M), ptx[:400]
    entries = re.findall(r"\.visible \.entry (\S+?)\(", ptx)
    assert len(entries) == 1 and name in entries[0], entries
    # float32 throughout: a stray float64 op runs at 1/32-1/64 rate on Orin and GeForce parts
    assert not re.search(r"\.f64\b", ptx), sorted(set(re.findall(r"\S+\.f64\b", ptx)))[:10]
    assert ("bar.sync" in ptx) == BARRIERS[name]
    assert ".local" not in ptx  # per-thread arrays live in registers, not local memory


ptxas = shutil.which("ptxas")


@pytest.mark.skipif(ptxas is None, reason="ptxas (CUDA toolkit) is not on PATH: register/spill check skipped")
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_kernels_fit_their_blocks(ptx_dir, arch):
    for name, threads in THREADS.items():
        res = subprocess.run([ptxas, f"-arch={arch}", "-v", str(ptx_dir / f"{name}.{arch}.ptx"), "-o", os.devnull],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        regs = int(re.search(r"Used (\d+) registers", res.stderr).group(1))
        assert "0 bytes spill stores" in res.stderr, (name, res.stderr)
        assert regs * threads <= 65536, (name, regs, threads)  # else the launch fails: too many resources
