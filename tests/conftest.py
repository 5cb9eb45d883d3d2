"""Shared fixtures. Tests that need ../shared (real data, shared weights) skip with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGE_FOCT_SHARED", ROOT.parent / "shared"))
WEIGHTS = SHARED / "weights"
DATA = SHARED / "data"
MOBILENET = WEIGHTS / "mobilenetv2-12-int8.onnx"
SHUFFLENET = WEIGHTS / "shufflenet-v2-12-qdq.onnx"


def need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} is absent (shared weights/data live beside the project in ../shared)")


def load_benchmark(name: str):
    """A fresh module object of ``benchmarks/<name>.py`` (benchmarks are scripts, not a package):
    each call executes it anew, so a test that sets its globals touches no other test's copy."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's real cache, and never try to download weights."""
    cache = tmp_path_factory.getbasetemp() / "edge-foct-cache"
    monkeypatch.setenv("EDGE_FOCT_CACHE", str(cache))
    monkeypatch.delenv("EDGE_FOCT_BACKBONE", raising=False)


@pytest.fixture(scope="session")
def random_backbone(tmp_path_factory) -> Path:
    from edge_foct.export.random_backbone import build_random_backbone

    return build_random_backbone(tmp_path_factory.mktemp("bb") / "random.onnx")


@pytest.fixture(scope="session")
def mobilenet_features(tmp_path_factory) -> Path:
    need(MOBILENET)
    from edge_foct.export.tap_backbone import tap_backbone

    return tap_backbone(MOBILENET, tmp_path_factory.mktemp("bb") / "mnv2.onnx")


@pytest.fixture(scope="session")
def demo_category(tmp_path_factory) -> Path:
    from edge_foct.edge_app.datasets.demo_product import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("demo"), n_train=4, n_good=4, n_defect=4)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
