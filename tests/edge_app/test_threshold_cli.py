"""fit --calibrate / --max-false-alarms, and the one-line warning when the threshold is unreliable
(fit, predict, demo, the dashboard's API)."""

from __future__ import annotations

import json
import shutil

import pytest

from edge_foct.edge_app.serve.app import ServeApp, ServeOptions
from edge_foct.edge_app.serve.sources import FolderSource

from .test_cli import one_error_line, run


def fit(tmp_path, demo_category, backbone, *extra):
    out = tmp_path / "bank"
    res = run("fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(backbone),
              "--out", str(out), "--shots", "2", "--size", "64", *extra)
    return res, out


def test_two_shots_without_calibration_say_so_in_one_line(tmp_path, demo_category, random_backbone):
    res, out = fit(tmp_path, demo_category, random_backbone)
    assert res.returncode == 0, res.stderr
    lines = [l for l in res.stderr.splitlines() if "threshold unreliable" in l]
    assert len(lines) == 1 and "add 10-20 good images with --calibrate" in lines[0]
    t = json.loads((out / "manifest.json").read_text())["threshold"]
    assert t["warning"] and t["calibration"] == [] and t["base"] > 0
    pred = run("predict", "--bank", str(out), str(demo_category / "test" / "good"), "--out", str(tmp_path / "p"))
    assert pred.returncode == 0 and "WARNING: threshold unreliable" in pred.stderr


def test_calibrate_folder_sets_the_rule_and_is_recorded(tmp_path, demo_category, random_backbone):
    cal = tmp_path / "cal"
    cal.mkdir()
    train = sorted((demo_category / "train" / "good").iterdir())
    for i in range(8):  # the demo's train/good has 4 images: repeat them under new names
        shutil.copy(train[i % len(train)], cal / f"c{i}.png")
    res, out = fit(tmp_path, demo_category, random_backbone, "--calibrate", str(cal))
    assert res.returncode == 0, res.stderr
    m = json.loads((out / "manifest.json").read_text())
    t = m["threshold"]
    assert len(t["calibration"]) == 8 and len(m["calibration"]) == 8
    import numpy as np

    from edge_foct.runtime.threshold import shipped_rule

    rule, (a1, w1, a2, w2) = shipped_rule(2, 8)
    assert t["rule"] == rule == "geo-loo-cal" and tuple(t["constants"]) == (a1, w1, a2, w2)
    # the geometric mean of two thresholds, by hand from what the manifest records: the support images'
    # highest score against a memory of the others moved to the calibration images' level (their median
    # over the median leave-one-out score) to the power w1 (loo-max-cal), and that highest score blended
    # with the highest calibration score, weight w2 (blend-loo)
    loo_max, level = max(t["samples"]), np.median(t["calibration"]) / np.median(t["samples"])
    loo_max_cal = (1 + a1) * loo_max * level ** w1
    blend_loo = (1 + a2) * loo_max ** (1 - w2) * max(t["calibration"]) ** w2
    assert t["value"] == pytest.approx(np.sqrt(loo_max_cal * blend_loo), rel=1e-5)


def test_max_false_alarms_budget(tmp_path, demo_category, random_backbone):
    res, out = fit(tmp_path, demo_category, random_backbone, "--max-false-alarms", "5%")
    assert res.returncode == 0, res.stderr
    lo = json.loads((out / "manifest.json").read_text())["threshold"]
    assert lo["rule"] == "budget-0.05"
    res, out2 = fit(tmp_path / "b", demo_category, random_backbone, "--max-false-alarms", "0.5")
    hi = json.loads((out2 / "manifest.json").read_text())["threshold"]
    assert hi["value"] < lo["value"]  # a larger budget, a lower threshold
    for bad in ("0", "150%", "x"):
        res, _ = fit(tmp_path / "c", demo_category, random_backbone, "--max-false-alarms", bad)
        assert res.returncode != 0 and "Traceback" not in res.stderr


def test_calibrate_folder_without_images_is_one_line(tmp_path, demo_category, random_backbone):
    (tmp_path / "empty").mkdir()
    res, _ = fit(tmp_path, demo_category, random_backbone, "--calibrate", str(tmp_path / "empty"))
    one_error_line(res, "--calibrate")


def test_dashboard_status_carries_the_threshold_warning(tmp_path, demo_category, random_backbone):
    res, bank = fit(tmp_path, demo_category, random_backbone)
    assert res.returncode == 0
    app = ServeApp(ServeOptions(bank=bank, out=tmp_path / "s", dashboard=False, lossless=True, max_frames=2,
                                calibrate_frames=100),
                   FolderSource(demo_category / "test" / "good"))
    app.start()
    try:
        status = app.live.status()
        assert status["threshold_warning"] and "--calibrate" in status["threshold_warning"]
    finally:
        app.stop()


def test_serve_recovers_from_a_bank_threshold_that_starts_too_low(tmp_path, demo_category, random_backbone):
    """Issue 12's 4000-of-4000 case in small: every good frame scores above the bank's threshold.
    The first --calibrate-frames frames (every score) set the line's threshold, which then holds."""
    from edge_foct.edge_app.serve.demo import write_video
    from edge_foct.runtime.image_io import list_images, read_image

    from .test_serve import SIZE, make_bank

    bank = make_bank(random_backbone, demo_category, tmp_path / "bank")
    man = json.loads((bank / "manifest.json").read_text())
    man["threshold"]["value"] = man["threshold"]["floor"] = 1e-6  # far below every good part's score
    from edge_foct.runtime.bank_check import DIGEST_KEY, manifest_digest

    man[DIGEST_KEY] = manifest_digest(man)  # a bank fitted that way, not an edited one
    (bank / "manifest.json").write_text(json.dumps(man))
    goods = [read_image(p) for p in list_images([str(demo_category / "test" / "good")])]
    video = write_video([goods[i % len(goods)] for i in range(40)], tmp_path / "good.avi", SIZE)
    from edge_foct.edge_app.serve.sources import CaptureSource

    app = ServeApp(ServeOptions(bank=bank, out=tmp_path / "out", dashboard=False, lossless=True,
                                calibrate_frames=8), CaptureSource(video, "video"))
    app.start()
    assert app.wait(120)
    app.stop()
    events = [json.loads(l) for l in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    assert len(events) == 40 and all(e["defective"] for e in events[:8])  # the bank's threshold judged these
    after = events[8:]
    assert sum(e["defective"] for e in after) <= 2  # the calibrated threshold passes the good parts
    assert len({e["threshold"] for e in after}) == 1  # and holds
