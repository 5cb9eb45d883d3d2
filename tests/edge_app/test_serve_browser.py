"""The dashboard in a real browser: headless Chromium (Debian's `chromium`, installed by .ci/run)
loads the page from 127.0.0.1, shows the live MJPEG overlay, and the verdict follows the stream."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import numpy as np
import pytest

from edge_foct.edge_app.inspect_session import open_session
from edge_foct.edge_app.serve.app import ServeApp, ServeOptions
from edge_foct.edge_app.serve.demo import write_video
from edge_foct.edge_app.serve.sources import CaptureSource
from edge_foct.runtime.image_io import list_images, read_image

from .test_serve import SIZE, bank  # noqa: F401  (the module's bank fixture)

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; .ci/run does it)")


def alternating_stream(bank, demo_category, tmp_path, pairs: int):  # noqa: F811
    """A video of ``pairs`` (good, defective) frame pairs and a threshold between the two frames'
    scores (as decoded from the video), so the verdict alternates. -> good, defective, video, threshold."""
    good = read_image(list_images([str(demo_category / "test" / "good")])[0])
    bad = read_image(list_images([str(demo_category / "test" / "defect")])[0])
    video = write_video([good, bad] * pairs, tmp_path / "alternate.avi", SIZE)
    session, frames = open_session(bank, online=False), CaptureSource(video, "video")
    frames.open()
    s_good, s_bad = (session.inspector.inspect(frames.read()).score for _ in range(2))
    frames.close()
    assert s_good != s_bad
    assert s_good < s_bad, (s_good, s_bad)  # the premise: the defect scores higher (a broken distance did not)
    return good, bad, video, float(np.mean([s_good, s_bad]))


def test_dashboard_shows_live_image_and_verdict_updates(bank, demo_category, tmp_path):  # noqa: F811
    browser = chromium()
    _, _, video, threshold = alternating_stream(bank, demo_category, tmp_path, 4)
    opts = ServeOptions(bank=bank, out=tmp_path / "out", port=0, threshold=threshold)
    # paced at 20 frames/s: Chromium's virtual time runs the page's polling much faster than real time, so
    # the stream must produce several events in the second or so of real time the page is open, on a busy box too
    app = ServeApp(opts, CaptureSource(video, "video", fps=20, loop=True))
    app.start()
    try:
        deadline = time.monotonic() + 30
        while app.live.counters["frames"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the page opens on a running stream
        # virtual time runs the page's polling for 60 s, then Chromium prints the DOM and exits
        r = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                            "--virtual-time-budget=60000", "--dump-dom", app.dashboard.url],
                           capture_output=True, text=True, timeout=90)
    finally:
        app.stop()
    dom = r.stdout
    assert r.returncode == 0 and "<body" in dom, r.stderr[-2000:]
    live = re.search(r'<img id="live"[^>]*>', dom).group(0)
    assert 'src="blob:' in live  # the picture of /frame.jpg, fetched with its verdict
    assert int(re.search(r'data-loaded="(\d+)"', live).group(1)) == SIZE  # a decoded frame
    updates = int(re.search(r'data-updates="(\d+)"', dom).group(1))
    assert updates >= 3
    assert re.search(r'data-verdicts="DEFECT,OK"', dom), "the verdict did not change with the frames"
    verdict = re.search(r'<div id="verdict" class="verdict (ok|defect)" data-frame="(\d+)">(OK|DEFECT)</div>', dom)
    assert verdict and verdict.group(1).upper() == verdict.group(3)
    # one truth: the badge is the verdict of the very frame the picture shows
    assert re.search(r'data-frame="(\d+)"', live).group(1) == verdict.group(2)
    assert re.search(r'<td id="latency">[\d.]+ / [\d.]+ / [\d.]+ ms</td>', dom)
    assert app.live.counters["frames"] >= updates


def dump_dom(browser: str, url: str, profile) -> str:
    r = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000",
                        "--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert r.returncode == 0 and "<body" in r.stdout, r.stderr[-2000:]
    return r.stdout


def test_acknowledged_defects_stay_acknowledged_across_a_reload_and_a_restart(bank, demo_category, tmp_path):  # noqa: F811
    import json
    import urllib.request

    browser = chromium()
    good, _, video, threshold = alternating_stream(bank, demo_category, tmp_path, 3)
    opts = ServeOptions(bank=bank, out=tmp_path / "out", port=0, threshold=threshold, lossless=True)
    app = ServeApp(opts, CaptureSource(video, "video"))
    app.start()
    try:
        deadline = time.monotonic() + 60
        while app.live.counters["frames"] < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        defects = [e for e in app.live.events(None, 100) if e["defective"]]
        assert len(defects) == 3, [(e["frame"], e["score"]) for e in app.live.events(None, 100)]
        run = defects[0]["run"]
        req = urllib.request.Request(app.dashboard.url + "api/acks", method="POST",
                                     data=json.dumps({"run": run, "frame": defects[0]["frame"]}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read()) == {"ok": True, "acknowledged": 1}
        dom = dump_dom(browser, app.dashboard.url, tmp_path / "profile")  # a (re)load of the page
    finally:
        app.stop()
    ids = lambda d: re.findall(r'<li id="defect-([0-9TZ]+-\d+)"', d)  # noqa: E731
    assert sorted(ids(dom)) == sorted(f"{run}-{e['frame']}" for e in defects[1:])
    assert re.search(r'data-acked="1"', dom)
    # a restart on the same OUT, on good frames only: the earlier run's unacknowledged defects are listed,
    # the acknowledged one is not
    time.sleep(1.1)  # a new run id (UTC seconds)
    app = ServeApp(opts, CaptureSource(write_video([good] * 3, tmp_path / "good.avi", SIZE), "video"))
    app.start()
    try:
        deadline = time.monotonic() + 60
        while app.live.counters["frames"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        dom = dump_dom(browser, app.dashboard.url, tmp_path / "profile2")
    finally:
        app.stop()
    assert sorted(ids(dom)) == sorted(f"{run}-{e['frame']}" for e in defects[1:])
    assert f"defect-{run}-{defects[0]['frame']}" not in dom
