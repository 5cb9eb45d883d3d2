"""The dashboard shows one truth: the picture and the verdict of the same frame, snapshots served by
their event names, defects listed from /api/events, and an overlay tinted only above the threshold."""

from __future__ import annotations

import json

import numpy as np

from edge_foct.edge_app.render import overlay_bgr
from edge_foct.edge_app.serve.dashboard import DashboardApp
from edge_foct.edge_app.serve.live import LiveStatus


def call(app, path):
    got = {}

    def start(status, headers):
        got["status"], got["headers"] = status, dict(headers)

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start))
    return got["status"], got["headers"], body


def event(frame, defective, snapshot=None):
    return {"frame": frame, "time": 1.0 + frame, "score": 2.0 if defective else 0.5, "defective": defective,
            "threshold": 1.0, "latency_ms": {"total": 1.0}, "snapshot": snapshot}


def test_frame_jpg_carries_its_own_verdict_and_snapshots_are_served(tmp_path):
    snaps = tmp_path / "snapshots"
    snaps.mkdir()
    (snaps / "20261202T000000Z-0000007_overlay.jpg").write_bytes(b"\xff\xd8jpeg")
    (tmp_path / "secret.txt").write_text("no")
    live = LiveStatus({"threshold": 1.0})
    app = DashboardApp(live, snapshots=snaps)
    assert call(app, "/frame.jpg")[0].startswith("404")
    live.publish(event(7, True, "snapshots/20261202T000000Z-0000007_overlay.jpg"), b"\xff\xd8seven")
    live.publish(event(8, False), b"\xff\xd8eight")
    status, headers, body = call(app, "/frame.jpg")
    assert body == b"\xff\xd8eight" and headers["X-Frame-Id"] == "8" and headers["X-Verdict"] == "OK"
    ev = json.loads(call(app, "/api/events")[2])["events"]
    snap = next(e["snapshot"] for e in ev if e["defective"])
    status, headers, body = call(app, "/" + snap)
    assert status.startswith("200") and headers["Content-Type"] == "image/jpeg" and body == b"\xff\xd8jpeg"
    for bad in ("/snapshots/../secret.txt", "/snapshots/secret.txt", "/snapshots/%2e%2e/secret.txt",
                "/snapshots/20261202T000000Z-0000009_overlay.jpg"):
        assert call(app, bad)[0].startswith("404")
    assert call(DashboardApp(live, snapshots=None), "/" + snap)[0].startswith("404")


def test_page_reads_badge_and_picture_from_one_response_and_keeps_defects():
    from importlib import resources

    js = resources.files("edge_foct.edge_app.serve").joinpath("static", "app.js").read_text()
    assert 'fetch("/frame.jpg"' in js and 'headers.get("X-Verdict")' in js
    assert "localStorage" in js and "acknowledge" in js and 'limit=1000' in js


def test_overlay_is_untinted_on_good_frames_and_red_on_defects():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    good_map = rng.uniform(0.0, 0.99, (64, 64)).astype(np.float32)  # everything below the threshold 1.0
    out = overlay_bgr(crop, good_map, 1.0, 0.99, False)
    bgr = crop[:, :, ::-1]
    assert np.array_equal(out[24:], bgr[24:])  # below the verdict text: the part's own pixels
    bad_map = good_map.copy()
    bad_map[40:50, 40:50] = 2.5
    out = overlay_bgr(crop, bad_map, 1.0, 2.5, True)
    spot = out[40:50, 40:50].astype(int)
    assert (spot[:, :, 2] > spot[:, :, 1]).all() and np.array_equal(out[24:38], bgr[24:38])
