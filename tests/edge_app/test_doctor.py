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
    for label in ("CUDA dev", "TensorRT:", "ONNX Runtime:", "OpenVINO:", "numba-cuda:", "libNVVM:",
                  "serve would take: engine", "threads: engine", "CPU flags"):
        assert label in res.stdout, (label, res.stdout)


def test_doctor_json_is_consistent(tmp_path):
    res = doctor("--json", "--engines", str(tmp_path))
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    serve = info["serve"]
    assert serve["compute"] == ("cuda" if info["numba_cuda_device_usable"] else "numpy")
    assert serve["engine"] in ("onnxruntime", "openvino")  # an empty --engines folder has no manifest
    assert serve["distances"] == ("openvino" if (serve["engine"], serve["compute"]) == ("openvino", "numpy")
                                  else serve["compute"])
    assert "engine manifest" in serve["engine_reason"] or "TensorRT" in serve["engine_reason"]
    # OpenVINO is taken exactly when it is installed with a CPU device (x86) and no GPU path is here
    if not info["cuda_devices"]:
        assert not info["numba_cuda_device_usable"]
        ov_here = (info["openvino"] is not None and "CPU" in info["openvino_devices"]
                   and info["machine"].endswith("x86_64"))
        assert (serve["engine"] == "openvino") == ov_here
        if serve["engine"] == "openvino":
            assert serve["precision"] in ("f32", "bf16") and "OpenVINO on the CPU" in serve["engine_reason"]
        else:
            assert serve["providers"] == ["CPUExecutionProvider"] and "OpenVINO:" in serve["engine_reason"]
    assert info["threads"]["cores"] >= 1 and info["threads"]["engine"] == info["threads"]["cores"]
    for d in info["cuda_devices"]:
        assert d["sm"] == "sm_" + d["compute_capability"].replace(".", "")
