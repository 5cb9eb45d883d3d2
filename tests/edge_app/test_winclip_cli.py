"""WinCLIP / WinCLIP+ through the command line on ../shared/data with a tiny random CLIP graph:
export -> fit (0 and 2 shots) -> predict -> serve -> eval -> bench, the same code as every method."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..conftest import DATA, need

pytest.importorskip("open_clip", reason="exporting the CLIP graph needs open_clip_torch (the export extra)")

CATEGORY = DATA / "metal_plate"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_foct.edge_app", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def clip_graph(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    r = run("export", "--what", "clip", "--clip-model", "tiny", "--clip-object", "metal plate", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out / "clip_tiny.onnx"


@pytest.fixture(scope="module")
def banks(clip_graph, tmp_path_factory):
    need(CATEGORY)
    root = tmp_path_factory.mktemp("banks")
    made = {}
    for method, shots in (("winclip", "0"), ("winclip", "2"), ("winclip+", "2")):
        out = root / f"{method}-{shots}"
        args = ["fit", "--backbone", str(clip_graph), "--method", method, "--shots", shots, "--out", str(out)]
        args += [] if shots == "0" else ["--support", str(CATEGORY / "train" / "good")]
        r = run(*args)
        assert r.returncode == 0, r.stderr
        made[(method, int(shots))] = out
    return made


def test_fit_records_the_zero_shot_and_few_shot_banks(banks):
    zero = json.loads((banks[("winclip", 0)] / "manifest.json").read_text())
    assert zero["support"] == [] and zero["threshold"]["rule"] == "zero-shot-prior"
    assert zero["threshold"]["value"] == 0.5
    assert zero["input"] == {"resize": 64, "crop": 64, "aspect": 1.0, "stride": 16} and zero["grid"] == [4, 4]
    plus = json.loads((banks[("winclip+", 2)] / "manifest.json").read_text())
    assert len(plus["support"]) == 2 and plus["threshold"]["rule"] not in ("zero-shot-prior", "override")
    assert plus["method"]["params"]["lam"] == 0.1 and plus["method"]["params"]["coreset_ratio"] == 0.5


@pytest.mark.parametrize("key", [("winclip", 0), ("winclip", 2), ("winclip+", 2)])
def test_predict_scores_every_image(banks, key, tmp_path):
    images = [p for d in ("defective", "good") for p in sorted((CATEGORY / "test" / d).iterdir())[:3]]
    r = run("predict", "--bank", str(banks[key]), *map(str, images), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 6
    for rec in recs:
        assert 0.0 <= rec["image_score"] <= 1.0 and "untrained" in rec["warning"]
        assert rec["diagnostics"]["memory_size"] == (0 if key[1] == 0 else 2 * (16 + 9 + 4) if key[0] == "winclip"
                                                     else (16 + 9 + 4))
        assert (tmp_path / rec["map"]).is_file() and rec["timings_ms"]["method"] > 0


def test_size_other_than_the_graphs_is_one_error_line(clip_graph, tmp_path):
    need(CATEGORY)
    r = run("fit", "--backbone", str(clip_graph), "--method", "winclip", "--shots", "0", "--size", "256",
            "--out", str(tmp_path / "b"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert [l for l in r.stderr.splitlines() if l.startswith("error:")] == \
        ["error: clip-tiny-random-seed0 takes 64x64 input only, not 256: pass --size 64"]
    r = run("fit", "--backbone", str(clip_graph), "--method", "winclip+", "--shots", "0", "--out", str(tmp_path / "c"))
    assert r.returncode != 0 and "needs at least 1 support image" in r.stderr and not (tmp_path / "c").exists()


def test_serve_runs_a_zero_shot_bank(banks, tmp_path):
    from edge_foct.edge_app.serve.demo import write_video
    from edge_foct.runtime.image_io import read_image

    frames = [read_image(p) for p in sorted((CATEGORY / "test" / "defective").iterdir())[:4]]
    video = write_video(frames, tmp_path / "v.avi", 64)
    r = run("serve", "--bank", str(banks[("winclip", 0)]), "--video", str(video), "--out", str(tmp_path / "o"),
            "--no-dashboard")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in (tmp_path / "o" / "events.jsonl").read_text().splitlines()]
    assert len(events) == 4 and all(e["threshold"] == 0.5 and 0 < e["score"] < 1 for e in events)


def test_eval_zero_and_few_shot(clip_graph, tmp_path):
    need(CATEGORY)
    r = run("eval", "--data", str(CATEGORY), "--backbone", str(clip_graph), "--methods", "winclip",
            "--shots", "0", "1", "--splits", "1", "--views", "2", "--jobs", "1", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    recs = json.loads((tmp_path / "a" / "results.json").read_text())["records"]
    assert [(x["method"], x["shots"]) for x in recs] == [("winclip", 0), ("winclip", 1)]
    assert all(0.0 <= x["metrics"]["image_auroc"]["mean"] <= 1.0 for x in recs)
    assert recs[0]["metrics"]["threshold"]["mean"] == 0.5
    r = run("eval", "--data", str(CATEGORY), "--backbone", str(clip_graph), "--methods", "winclip+",
            "--shots", "0", "--splits", "1", "--out", str(tmp_path / "b"))
    assert r.returncode != 0 and "needs zero-shot methods" in r.stderr


def test_bench_fills_the_winclip_rows(clip_graph, tmp_path):
    need(CATEGORY)
    r = run("bench", "--backbone", str(clip_graph), "--data", str(CATEGORY), "--methods", "winclip", "winclip+",
            "--shots", "1", "--frames", "2", "--warmup", "1", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "bench.md").read_text()
    assert "| winclip | " in md and "| winclip+ | " in md and "winclip (paper only)" not in md
    rows = {x["method"]: x for x in json.loads((tmp_path / "bench.json").read_text())["results"]}
    assert rows["winclip+"]["latency_ms"]["method"]["median"] > 0 and rows["winclip"]["patches"] == 16
