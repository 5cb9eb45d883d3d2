"""The command line end to end, and its answers to bad input: one line, no traceback, nothing damaged."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ..conftest import DATA, need


def run(*args: str, env_cache: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_foct.edge_app", *args], capture_output=True, text=True,
                          timeout=600)


def one_error_line(res: subprocess.CompletedProcess, pattern: str) -> None:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    errors = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and pattern in errors[0], res.stderr


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, demo_category, random_backbone):
    out = tmp_path_factory.mktemp("fit") / "bank"
    res = run("fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(random_backbone),
              "--out", str(out), "--shots", "2", "--size", "128")
    assert res.returncode == 0, res.stderr
    return out


def test_fit_predict_outputs(fitted, demo_category, tmp_path):
    res = run("predict", "--bank", str(fitted), str(demo_category / "test" / "good"),
              str(demo_category / "test" / "defect"), "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    recs = [json.loads(l) for l in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 8
    for r in recs:
        assert set(r["timings_ms"]) == {"preprocess", "backbone", "method", "map", "total"}
        assert "untrained" in r["warning"]  # random backbone: every result says so
        m = cv2.imread(str(tmp_path / r["map"]), cv2.IMREAD_UNCHANGED)
        assert m.dtype == np.uint16 and m.shape == (128, 128)
        assert cv2.imread(str(tmp_path / r["overlay"])).shape == (128, 128, 3)


def test_empty_folder(tmp_path, random_backbone):
    (tmp_path / "empty").mkdir()
    res = run("fit", "--support", str(tmp_path / "empty"), "--backbone", str(random_backbone),
              "--out", str(tmp_path / "b"))
    one_error_line(res, "no support images")
    assert not (tmp_path / "b").exists()


def test_corrupt_support_image_writes_nothing(tmp_path, demo_category, random_backbone, fitted):
    sup = tmp_path / "sup"
    shutil.copytree(demo_category / "train" / "good", sup)
    (sup / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    bank = tmp_path / "bank"
    shutil.copytree(fitted, bank)
    before = {p.name: p.read_bytes() for p in bank.iterdir()}
    res = run("fit", "--support", str(sup), "--backbone", str(random_backbone), "--out", str(bank), "--force")
    one_error_line(res, "zz_corrupt.png")
    assert {p.name: p.read_bytes() for p in bank.iterdir()} == before


def test_corrupt_image_in_predict_is_reported_and_skipped(tmp_path, fitted, demo_category):
    imgs = tmp_path / "imgs"
    shutil.copytree(demo_category / "test" / "good", imgs)
    (imgs / "zz_corrupt.png").write_bytes(b"garbage")
    res = run("predict", "--bank", str(fitted), str(imgs), "--out", str(tmp_path / "o"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    recs = [json.loads(l) for l in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    assert sum("error" in r for r in recs) == 1 and len(recs) == 5


def test_16bit_and_grey_images_work(tmp_path, fitted, demo_category):
    src = cv2.imread(str(next((demo_category / "test" / "good").iterdir())))
    cv2.imwrite(str(tmp_path / "grey.png"), cv2.cvtColor(src, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "deep.png"), src.astype(np.uint16) * 257)
    res = run("predict", "--bank", str(fitted), str(tmp_path / "grey.png"), str(tmp_path / "deep.png"),
              "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    recs = [json.loads(l) for l in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    assert all("image_score" in r for r in recs)


def test_bank_from_other_backbone(tmp_path, fitted, demo_category, mobilenet_features):
    res = run("predict", "--bank", str(fitted), "--backbone", str(mobilenet_features),
              str(demo_category / "test" / "good"), "--out", str(tmp_path / "o"))
    one_error_line(res, "re-run `edge-foct fit --backbone")
    assert not (tmp_path / "o").exists()


def test_unknown_method(tmp_path, demo_category, random_backbone):
    res = run("fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(random_backbone),
              "--out", str(tmp_path / "b"), "--method", "nope")
    one_error_line(res, "'nope' is not one of")


@pytest.mark.shared_data
def test_metal_plate_two_shot_with_mobilenet(tmp_path, mobilenet_features):
    need(DATA / "metal_plate")
    cat = DATA / "metal_plate"
    res = run("fit", "--support", str(cat / "train" / "good"), "--backbone", str(mobilenet_features),
              "--out", str(tmp_path / "bank"), "--shots", "2", "--seed", "0")
    assert res.returncode == 0, res.stderr
    res = run("predict", "--bank", str(tmp_path / "bank"), str(cat / "test" / "good"),
              str(cat / "test" / "defective"), "--out", str(tmp_path / "p"))
    assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "benchmarks" / "auroc_from_predict.py"),
                          str(tmp_path / "p" / "results.jsonl"), "--gt", str(cat / "ground_truth")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.splitlines()[-1])
    assert got["image_auroc"] > 0.85 and got["pixel_auroc"] > 0.9, got


def test_patchcore_plus_online_preset_learns_in_predict_only_when_online(tmp_path, demo_category, random_backbone):
    """seed 001 Table 6 through fit/predict: a bank fitted with preset "online" grows its memory from the
    images predict judges good (diagnostics ``admitted`` / ``online_rows``), in order; --offline learns nothing."""
    bank = tmp_path / "bank"
    res = run("fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(random_backbone),
              "--out", str(bank), "--shots", "2", "--size", "128", "--method", "patchcore+", "--preset", "online",
              "--threshold", "1e30")  # every image is "good" at this threshold: each one may enter
    assert res.returncode == 0, res.stderr
    goods = str(demo_category / "test" / "good")
    for mode, grows in (("--online", True), ("--offline", False)):
        res = run("predict", "--bank", str(bank), goods, "--out", str(tmp_path / mode), mode)
        assert res.returncode == 0, res.stderr
        recs = [json.loads(l) for l in (tmp_path / mode / "results.jsonl").read_text().splitlines()]
        rows = [r["diagnostics"]["online_rows"] for r in recs]
        admitted = [r["diagnostics"]["admitted"] for r in recs]
        if grows:
            assert all(a > 0 for a in admitted) and rows == sorted(rows) and rows[-1] > 0
            assert recs[-1]["diagnostics"]["memory_size"] > recs[0]["diagnostics"]["memory_size"]
        else:
            assert admitted == [0] * len(recs) and rows == [0] * len(recs)
