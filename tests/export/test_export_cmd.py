"""``edge-foct export`` end to end: graphs, manifest (config, names and shapes, sha256, exporter,
opset, versions, parity), and one-line errors for what a user can fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edge_foct.runtime.backbone import Backbone, file_sha256


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_foct.edge_app", *args], capture_output=True, text=True,
                          timeout=600)


def one_error_line(res: subprocess.CompletedProcess, pattern: str) -> None:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and pattern in errors[0], res.stderr


def test_export_backbone_and_navigator(tmp_path):
    pytest.importorskip("torch", reason="export runs torch (the export extra: pip install -e \".[export]\")")
    out = tmp_path / "onnx"
    res = run("export", "--what", "backbone", "--what", "navigator", "--random-weights", "--check-size", "64",
              "--navigator-dim", "64", "--navigator-hidden", "32,16", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "NOT pretrained" in res.stdout and res.stdout.count(": ok (checker; ONNX Runtime vs torch") == 2
    manifest = json.loads((out / "manifest.json").read_text())
    bb, nav = manifest["graphs"]["backbone"], manifest["graphs"]["navigator"]
    assert bb["config"]["pretrained"] is False and bb["config"]["weights"] == "random"
    assert bb["sha256"] == {"wide_resnet50_2.onnx": file_sha256(out / "wide_resnet50_2.onnx")}
    assert bb["outputs"] == [{"name": "patch_features", "dtype": "float32", "shape": ["batch", "h", "w", 1024]}]
    assert [p["shape"] for p in bb["parity"]] == [[1, 8, 8, 1024], [1, 10, 10, 1024]]
    assert all(p["ok"] and p["max_abs_err"] <= p["atol"] for p in bb["parity"] + nav["parity"])
    assert "legacy" in bb["exporter"] and bb["opset"] == 17 and "torch" in bb["versions"]
    assert nav["config"]["negative_slope"] == 0.01 and nav["config"]["hidden"] == [32, 16]
    assert set(nav["sha256"]) == {"navigator.onnx", "navigator_init.npz"}
    f = Backbone.load(out / "wide_resnet50_2.onnx").features(np.zeros((1, 3, 32, 48), np.float32))
    assert f.shape == (1, 4, 6, 1024) and np.isfinite(f).all()


@pytest.mark.parametrize("args,pattern", [
    (("--what", "all"), "--sam-checkpoint"),
    (("--what", "backbone", "--weights", "w.pth", "--random-weights"), "exclude each other"),
    (("--what", "navigator", "--navigator-hidden", "512"), "--navigator-hidden '512'"),
])
def test_errors_are_one_line(tmp_path, args, pattern):
    one_error_line(run("export", *args, "--out", str(tmp_path / "o")), pattern)


def test_export_without_torch_is_one_line(tmp_path):
    """A lean install (no export extra): one line naming the extra, not an ImportError traceback."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _NoTorch())\n")
    env = {**os.environ, "PYTHONPATH": str(block)}
    res = subprocess.run([sys.executable, "-m", "edge_foct.edge_app", "export", "--what", "navigator",
                          "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120, env=env)
    one_error_line(res, "export needs torch")
    assert not (tmp_path / "o").exists()
