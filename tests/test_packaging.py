"""Every package folder is installed under edge_foct.* (pyproject lists them explicitly)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapping = {v: k for k, v in cfg["package-dir"].items()}
    for top, dotted in mapping.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            assert ".".join((dotted, *rel)) in listed, f"{init.parent} is not in pyproject packages"


def test_no_conflicting_requirements():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    every = " ".join(deps["dependencies"] + sum(deps["optional-dependencies"].values(), []))
    assert not ("opencv-python-headless" in every and "opencv-python>" in every)
    assert "onnxruntime-gpu" not in every  # the gpu extra leaves the ORT build to the target
