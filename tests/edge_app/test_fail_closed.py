"""A verdict fails closed: NaN/inf thresholds are refused with one line, NaN scores are defective,
and no output (results.jsonl, events, the dashboard API) carries NaN, which strict JSON parsers reject."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge_foct.edge_app.json_out import dumps, finite_or_none
from edge_foct.edge_app.serve.dashboard import DashboardApp
from edge_foct.edge_app.serve.live import LiveStatus
from edge_foct.runtime.bank import Bank
from edge_foct.runtime.bank_check import DIGEST_KEY, manifest_digest
from edge_foct.runtime.errors import BankError

from .test_cli import one_error_line, run


def strict_loads(text: str):
    """json.loads that rejects NaN / Infinity, as a browser's JSON.parse does."""
    def bad(c):
        raise ValueError(f"non-standard JSON constant {c}")
    return json.loads(text, parse_constant=bad)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_fit_threshold_nan_is_one_line(value, tmp_path, demo_category, random_backbone):
    res = run("fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(random_backbone),
              "--out", str(tmp_path / "b"), "--shots", "2", "--size", "64", "--threshold", value)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert "not a finite number" in res.stderr
    assert not (tmp_path / "b").exists()


def test_predict_and_serve_threshold_nan_refused(tmp_path, demo_category):
    res = run("predict", "--bank", str(tmp_path), str(demo_category / "test" / "good"), "--out",
              str(tmp_path / "p"), "--threshold", "nan")
    assert res.returncode != 0 and "Traceback" not in res.stderr and "not a finite number" in res.stderr
    res = run("serve", "--demo", "--threshold", "inf", "--out", str(tmp_path / "s"), "--no-dashboard")
    assert res.returncode != 0 and "Traceback" not in res.stderr and "not a finite number" in res.stderr


def test_toml_threshold_nan_refused_before_compute(tmp_path, demo_category, random_backbone):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[threshold]\nvalue = nan\n")
    res = run("fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(random_backbone),
              "--out", str(tmp_path / "b"), "--shots", "2", "--size", "64", "--config", str(cfg))
    one_error_line(res, "finite number")


@pytest.fixture(scope="module")
def small_bank(tmp_path_factory, demo_category, random_backbone):
    out = tmp_path_factory.mktemp("fc") / "bank"
    res = run("fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(random_backbone),
              "--out", str(out), "--shots", "2", "--size", "64")
    assert res.returncode == 0, res.stderr
    return out


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "abc"])
def test_manifest_threshold_not_finite_is_refused(small_bank, tmp_path, demo_category, value):
    import shutil

    bank_dir = tmp_path / "bank"
    shutil.copytree(small_bank, bank_dir)
    man = json.loads((bank_dir / "manifest.json").read_text())
    man["threshold"]["value"] = value
    man[DIGEST_KEY] = manifest_digest(man)  # re-hashed: the value check itself must refuse it
    (bank_dir / "manifest.json").write_text(json.dumps(man))  # json.dumps writes NaN / Infinity here
    with pytest.raises(BankError, match="not a"):
        Bank.load(bank_dir).threshold
    res = run("predict", "--bank", str(bank_dir), str(demo_category / "test" / "good"), "--out", str(tmp_path / "p"))
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "p" / "results.jsonl").exists()


def test_nan_score_is_defective_and_written_as_null(small_bank, demo_category, tmp_path, random_backbone):
    """A method that returns NaN patch scores: the part is defective, results.jsonl stays valid JSON."""
    from edge_foct.edge_app.inspect_session import open_session
    from edge_foct.edge_app.predicting import predict_images
    from edge_foct.runtime.image_io import list_images

    session = open_session(small_bank, str(random_backbone))
    method = session.inspector.method
    real = method.score

    def nan_score(feats, update=True):
        r = real(feats, update=False)
        r.scores[:] = np.nan
        return r

    method.score = nan_score
    recs = predict_images(session, list_images([str(demo_category / "test" / "good")])[:2], tmp_path, progress=False)
    assert all(r["defective"] for r in recs)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    parsed = [strict_loads(l) for l in lines]
    assert all(p["image_score"] is None and p["defective"] is True for p in parsed)


def test_dashboard_api_never_writes_nan():
    live = LiveStatus({"threshold": 1.0})
    live.publish({"frame": 1, "time": 0.0, "score": float("nan"), "defective": True, "threshold": 1.0,
                  "latency_ms": {"total": float("inf")}, "diagnostics": {"x": np.float32("nan")}}, b"jpg")
    app = DashboardApp(live)
    for path in ("/api/status", "/api/events"):
        body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, lambda *a: None))
        obj = strict_loads(body.decode())
        assert obj  # parsed under the strict rules
    assert strict_loads(dumps({"a": [float("nan"), np.float64("inf"), 1.5]})) == {"a": [None, None, 1.5]}
    assert finite_or_none(np.int64(3)) == 3 and finite_or_none(math.pi) == math.pi
