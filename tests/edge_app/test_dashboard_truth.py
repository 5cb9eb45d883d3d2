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


def post(app, path, body: bytes, ctype="application/json", **headers):
    import io

    got = {}

    def start(status, hdrs):
        got["status"] = status

    env = {"PATH_INFO": path, "REQUEST_METHOD": "POST", "CONTENT_TYPE": ctype, "CONTENT_LENGTH": str(len(body)),
           "wsgi.input": io.BytesIO(body), "HTTP_HOST": "127.0.0.1:8008", **headers}
    out = b"".join(app(env, start))
    return got["status"], json.loads(out)


def test_acknowledgements_are_kept_on_the_server_atomically_and_survive_a_restart(tmp_path):
    from edge_foct.edge_app.serve.acks import FILE_NAME, Acknowledgements, earlier_defects

    run_a, run_b = "20261202T100000Z", "20261202T110000Z"
    log = tmp_path / "events.jsonl"
    log.write_text("".join(json.dumps({**event(f, f % 2 == 1), "run": run_a}) + "\n" for f in range(6))
                   + "not json\n")
    acks = Acknowledgements(tmp_path)
    live = LiveStatus({"threshold": 1.0})
    app = DashboardApp(live, acks=acks, earlier=earlier_defects(log, acks, run_b))
    got = json.loads(call(app, "/api/acks")[2])
    assert got["acknowledged"] == [] and [e["frame"] for e in got["earlier"]] == [1, 3, 5]
    status, body = post(app, "/api/acks", json.dumps({"run": run_a, "frame": 3}).encode())
    assert status.startswith("200") and body == {"ok": True, "acknowledged": 1}
    assert json.loads((tmp_path / FILE_NAME).read_text()) == {"acknowledged": [f"{run_a}-3"]}
    assert [e["frame"] for e in json.loads(call(app, "/api/acks")[2])["earlier"]] == [1, 5]
    assert post(app, "/api/acks", json.dumps({"run": run_a, "frame": 3}).encode())[1]["acknowledged"] == 1
    # refused: not JSON (a cross-site form), another origin, bad names, no body, too large
    for body, ctype, hdrs, code in [
            (b"run=x&frame=1", "application/x-www-form-urlencoded", {}, "415"),
            (json.dumps({"run": run_a, "frame": 1}).encode(), "application/json", {"HTTP_ORIGIN": "http://evil.example"}, "403"),
            (json.dumps({"run": "../x", "frame": 1}).encode(), "application/json", {}, "400"),
            (json.dumps({"run": run_a, "frame": -1}).encode(), "application/json", {}, "400"),
            (json.dumps({"run": run_a, "frame": True}).encode(), "application/json", {}, "400"),
            (b"{", "application/json", {}, "400"), (b"", "application/json", {}, "400"),
            (b"{" + b" " * 2000 + b"}", "application/json", {}, "400")]:
        assert post(app, "/api/acks", body, ctype, **hdrs)[0].startswith(code), (body[:40], code)
    assert post(app, "/api/acks", json.dumps({"run": run_a, "frame": 5}).encode(),
                HTTP_ORIGIN="http://127.0.0.1:8008")[0].startswith("200")
    # a restart: a new Acknowledgements on the same folder knows both, and the earlier list drops them
    again = Acknowledgements(tmp_path)
    assert again.names() == [f"{run_a}-3", f"{run_a}-5"]
    assert [e["frame"] for e in earlier_defects(log, again, run_b)] == [1]
    assert earlier_defects(log, again, run_a) == []  # the current run's defects come from /api/events
    # a damaged file: none acknowledged (a defect shows again), never a crash
    (tmp_path / FILE_NAME).write_text("{broken")
    assert Acknowledgements(tmp_path).names() == []
    assert call(DashboardApp(live), "/api/acks")[0].startswith("200")
    assert post(DashboardApp(live), "/api/acks", b"{}")[0].startswith("404")


def test_page_reads_badge_and_picture_from_one_response_and_keeps_defects():
    from importlib import resources

    js = resources.files("edge_foct.edge_app.serve").joinpath("static", "app.js").read_text()
    assert 'fetch("/frame.jpg"' in js and 'headers.get("X-Verdict")' in js
    assert '"/api/acks"' in js and 'method: "POST"' in js and "acknowledge" in js and 'limit=1000' in js


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


def test_acknowledge_goes_through_the_host_and_token_checks(tmp_path):
    from edge_foct.edge_app.serve.acks import Acknowledgements
    from edge_foct.edge_app.serve.http_guard import HttpGuard

    app = HttpGuard(DashboardApp(LiveStatus({"threshold": 1.0}), acks=Acknowledgements(tmp_path)), "127.0.0.1",
                    token="token-for-tests")
    body = json.dumps({"run": "20261202T100000Z", "frame": 1}).encode()
    assert post(app, "/api/acks", body)[0].startswith("401")  # no token
    assert post(app, "/api/acks", body, HTTP_HOST="evil.example", HTTP_AUTHORIZATION="Bearer token-for-tests")[0] \
        .startswith("400")  # a rebinding page
    assert not (tmp_path / "acknowledged.json").exists()
    status, got = post(app, "/api/acks", body, HTTP_AUTHORIZATION="Bearer token-for-tests")
    assert status.startswith("200") and got == {"ok": True, "acknowledged": 1}
