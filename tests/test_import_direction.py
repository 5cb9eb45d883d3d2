"""runtime never imports torch, export or segment-anything; edge_app never imports export at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_RUNTIME = ("torch", "torchvision", "segment_anything", "edge_foct.export", "onnx")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0 and node.module:
            if node.module.split(".")[0] == "export" and "runtime" in path.parts:
                out.add("edge_foct.export")
    return out


def test_runtime_sources_import_no_torch_no_export():
    for py in (ROOT / "runtime").rglob("*.py"):
        for mod in _imports(py):
            top = mod if mod.startswith("edge_foct.") else mod.split(".")[0]
            assert not any(top == f or top.startswith(f + ".") for f in FORBIDDEN_IN_RUNTIME), (py, mod)


def test_importing_the_runtime_loads_no_torch():
    code = ("import sys, pkgutil, importlib, edge_foct.runtime as r\n"
            "for m in pkgutil.walk_packages(r.__path__, 'edge_foct.runtime.'):\n"
            "    if '.cuda' not in m.name: importlib.import_module(m.name)\n"
            "bad = [m for m in ('torch', 'torchvision', 'segment_anything', 'edge_foct.export') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_cli_import_loads_no_torch():
    code = "import sys, edge_foct.edge_app.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
