"""The README's commands work: the two set-up commands (run verbatim by .ci/run) and the quick start."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DATA, SHARED, WEIGHTS, need

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def block(after: str) -> list[str]:
    """Command lines of the first ```bash block after the heading/marker ``after``."""
    text = README[README.index(after):]
    body = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [l for l in body.splitlines() if l.strip() and not l.lstrip().startswith("#")]


def sh(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_setup_is_two_commands_install_plus_demo_and_tests():
    install, tests = block("<!-- setup:")
    assert "pip install -e . " in install and install.rstrip().endswith("edge-foct demo")
    assert "[" not in install  # the first command installs the lean package only: no extras, no torch
    assert "pip install" in tests and tests.rstrip().endswith("&& python -m pytest")


def test_setup_main_job_runs(tmp_path):
    """The main job of the first command, on a fresh cache with no backbone given: the pretrained
    EfficientNet-Lite0 from the installed wheel, no download attempt, and it finds the defects."""
    demo = block("<!-- setup:")[0].split("&&")[-1].strip()
    res = sh(demo, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "efficientnet-lite0" in res.stdout and "pretrained" in res.stdout, res.stdout
    assert "untrained" not in res.stdout and "WARNING" not in res.stdout
    assert "Downloading" not in res.stderr and "download.pytorch.org" not in res.stderr
    caught = re.search(r"defective parts:\s+(\d+), flagged (\d+)", res.stdout)
    good = re.search(r"good parts\s+:\s+(\d+), flagged (\d+)", res.stdout)
    assert caught and good, res.stdout
    assert int(caught.group(2)) >= int(caught.group(1)) - 1  # at least 9 of 10 caught
    assert int(good.group(2)) <= 1  # at most 1 of 10 false alarms


def test_quick_start_on_real_images(tmp_path):
    need(WEIGHTS / "mobilenetv2-12-int8.onnx")
    need(DATA / "metal_plate")
    for cmd in block("## Quick start"):
        cmd = cmd.replace("../shared", str(SHARED)).replace("python benchmarks/", f"python {ROOT}/benchmarks/")
        res = sh(cmd, tmp_path)
        assert res.returncode == 0, (cmd, res.stderr[-2000:])
    assert "image_auroc" in res.stdout
