"""`edge-foct bench` fits its own bank (demo part by default) and reports per-stage latency."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edge_foct.edge_app.bench_cmd import STAGES
from edge_foct.edge_app.cli import cli
from edge_foct.edge_app.machine_info import describe, machine_info
from edge_foct.runtime.methods import METHODS
from edge_foct.runtime.methods.patchcore import PatchCore


@pytest.mark.parametrize("data", ["demo", "given"])
def test_bench_outputs(data, demo_category, random_backbone, tmp_path):
    extra = ["--data", str(demo_category)] if data == "given" else []
    res = CliRunner().invoke(cli, ["bench", "--backbone", str(random_backbone), "--size", "64", "--methods",
                                   "patchcore", "--frames", "6", "--warmup", "2", "--out", str(tmp_path), *extra])
    assert res.exit_code == 0, res.output + repr(res.exception)
    got = json.loads((tmp_path / "bench.json").read_text())
    (row,) = got["results"]
    assert row["method"] == "patchcore" and row["frames"] == 6 and row["warmup"] == 2
    for s in STAGES:
        lat = row["latency_ms"][s]
        assert 0 <= lat["median"] <= lat["p95"] <= lat["p99"]
    assert row["latency_ms"]["total"]["median"] >= row["latency_ms"]["backbone"]["median"]
    assert row["patches"] == 64 and row["memory_rows"] >= 1
    assert row["method_flops"] == PatchCore.flops(row["memory_rows"], row["patches"], row["feature_dim"])
    assert row["peak_rss_mib"] > 10
    assert got["data"] == (str(demo_category) if data == "given" else "built-in demo part")
    table = (tmp_path / "bench.md").read_text()
    assert "| patchcore |" in table and "0.21" in table and "winclip+ (paper only)" in table
    assert got["machine"]["cores"] >= 1 and "numpy" in got["machine"]["versions"]


def test_flops_hook():
    # (q, m) GEMM + norms + per-pair add/clamp/argmin
    assert PatchCore.flops(100, 1024, 768) == 2 * 100 * 1024 * 768 + 2 * 1124 * 768 + 4 * 100 * 1024
    for cls in METHODS.values():  # every method answers: a number, or None (the table says "–")
        f = cls.flops(100, 1024, 768)
        assert f is None or f > 0


def test_machine_info_describes_this_machine():
    info = machine_info()
    assert info["cpu"] and info["cores"] >= 1 and info["versions"]["python"]
    line = describe(info)
    assert info["cpu"] in line and "onnxruntime" in line
