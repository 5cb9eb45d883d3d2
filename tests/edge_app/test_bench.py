"""`edge-foct bench` fits its own bank (demo part by default) and reports per-stage latency."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edge_foct.edge_app.evaluation.latency import STAGES
from edge_foct.edge_app.cli import cli
from edge_foct.edge_app.machine_info import describe, machine_info
from edge_foct.runtime.errors import EdgeFoctError
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
    assert row["engine"].split(" ")[0] in ("onnxruntime", "openvino") and row["precision"] in ("f32", "bf16")
    assert row["threads"]["engine"] == row["threads"]["cores"] and row["threads_short"].startswith("e")
    table = (tmp_path / "bench.md").read_text()
    assert "| patchcore | " in table and "0.21" in table and "winclip+ (paper only)" in table
    assert f"| {row['engine']} | {row['precision']} | {row['threads_short']} |" in table  # beside each row
    assert got["machine"]["cores"] >= 1 and "numpy" in got["machine"]["versions"]


def test_bench_compare_runs_engines_and_plans_interleaved(demo_category, random_backbone, tmp_path, monkeypatch):
    from edge_foct.edge_app.evaluation import latency

    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edge-foct[openvino]')")
    order = []  # (row, frame) in the order run_rows drives them
    inspect = latency.Inspector.inspect

    def recording(self, rgb):
        order.append(id(self))
        return inspect(self, rgb)

    monkeypatch.setattr(latency.Inspector, "inspect", recording)
    res = CliRunner().invoke(cli, ["bench", "--backbone", str(random_backbone), "--size", "64", "--methods",
                                   "patchcore", "--frames", "3", "--warmup", "1", "--out", str(tmp_path),
                                   "--compare", "cpu openvino:f32", "--threads", "1", "library"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    rows = json.loads((tmp_path / "bench.json").read_text())["results"]
    got = [(r["engine"], r["precision"], r["threads_short"]) for r in rows]
    assert got == [("onnxruntime [CPUExecutionProvider]", "f32", "e1 b1 cv1"),
                   ("onnxruntime [CPUExecutionProvider]", "f32", rows[1]["threads_short"]),
                   ("openvino [CPU, f32]", "f32", "e1 b1 cv1"),
                   ("openvino [CPU, f32]", "f32", rows[3]["threads_short"])]
    assert rows[1]["threads_short"].startswith("elib+spin") and rows[1]["threads"]["source"].startswith("library")
    assert rows[0]["engine_description"].endswith("(1 threads, no spin)")
    assert "1 threads]" in rows[2]["engine_description"]
    assert len(order) == 4 * 4 and len(set(order[:4])) == 4  # frame 0 went through all 4 rows before frame 1
    assert order[:4] == order[4:8] == order[12:16]
    assert "4 rows interleaved" in (tmp_path / "bench.md").read_text()
    for bad in (["--threads", "0"], ["--threads", "many"], ["--compare", "gpu"]):
        res = CliRunner().invoke(cli, ["bench", "--backbone", str(random_backbone), "--size", "64", *bad])
        assert res.exit_code != 0 and isinstance(res.exception, EdgeFoctError), (bad, res.output)


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
