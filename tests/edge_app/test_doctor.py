"""``edge-foct doctor`` runs cleanly on any machine and reports what it found, consistently."""

from __future__ import annotations

import json
import subprocess
import sys


def doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_foct.edge_app", "doctor", *args], capture_output=True,
                          text=True, timeout=120)


def test_doctor_text_names_every_part():
    res = doctor()
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    for label in ("CUDA dev", "TensorRT:", "ONNX Runtime:", "numba-cuda:", "libNVVM:", "serve would take: engine"):
        assert label in res.stdout, (label, res.stdout)


def test_doctor_json_is_consistent(tmp_path):
    res = doctor("--json", "--engines", str(tmp_path))
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    serve = info["serve"]
    assert serve["compute"] == ("cuda" if info["numba_cuda_device_usable"] else "numpy")
    assert serve["engine"] == "onnxruntime"  # an empty --engines folder has no manifest
    assert "engine manifest" in serve["engine_reason"] or "TensorRT" in serve["engine_reason"]
    if not info["cuda_devices"]:
        assert serve["providers"] == ["CPUExecutionProvider"] and not info["numba_cuda_device_usable"]
    for d in info["cuda_devices"]:
        assert d["sm"] == "sm_" + d["compute_capability"].replace(".", "")
