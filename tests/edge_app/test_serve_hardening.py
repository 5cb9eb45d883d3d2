"""`edge-foct serve` against what a demanding user tried (issue 16): idle sockets, Host headers and
tokens, a full disk under the event log, bad option values, two serves on one --out, restarts of a
folder source, HEAD requests, SIGTERM with a viewer, and a stream that is down at start-up.

Every network request goes to 127.0.0.1 (or binds it), in loops bounded in count and time.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_foct.edge_app.serve.app import ServeApp, ServeOptions
from edge_foct.edge_app.serve.http_guard import CHANNEL_TIMEOUT_S, CLEANUP_INTERVAL_S
from edge_foct.edge_app.serve.outputs import EventLog, Snapshots
from edge_foct.edge_app.serve.sources import FOLDER_STATE, CaptureSource, FolderSource, SourceError
from edge_foct.runtime.image_io import list_images, read_image

from .test_serve import make_bank, read_events, serve_cli, wait_for, write_video, N_FRAMES, SIZE

TOKEN = "t0ken-for-tests"


@pytest.fixture(scope="module")
def bank(tmp_path_factory, random_backbone, demo_category) -> Path:
    return make_bank(random_backbone, demo_category, tmp_path_factory.mktemp("serve-h") / "bank")


@pytest.fixture(scope="module")
def video(tmp_path_factory, demo_category) -> Path:
    paths = list_images([str(demo_category / "test" / "good"), str(demo_category / "test" / "defect")])
    frames = [read_image(paths[i % len(paths)]) for i in range(N_FRAMES)]
    return write_video(frames, tmp_path_factory.mktemp("video-h") / "parts.avi", SIZE)


def serving(bank: Path, video: Path, out: Path, **kw) -> ServeApp:
    app = ServeApp(ServeOptions(bank=bank, out=out, port=0, **kw), CaptureSource(video, "video", fps=30, loop=True))
    app.start()
    return app


def request(port: int, path: str, method: str = "GET", headers: dict | None = None,
            timeout: float = 5.0) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        body = r.read() if method != "HEAD" else b""
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        conn.close()


def raw(port: int, text: str, timeout: float = 5.0, limit: int = 1 << 20) -> bytes:
    """Send ``text`` as-is (HTTP/1.0: the server closes after the response); everything read back,
    until the server closes, ``limit`` bytes or ``timeout`` seconds."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(text.encode())
        end = time.monotonic() + timeout
        while len(data) < limit and time.monotonic() < end:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
    return data


# --- item 3: idle connections ------------------------------------------------------------------

def test_idle_connections_do_not_lock_out_health(bank, video, tmp_path):
    app = serving(bank, video, tmp_path)
    idle: list[socket.socket] = []
    try:
        port = app.dashboard.port
        for _ in range(150):  # more than waitress's default connection_limit (100)
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        t0 = time.monotonic()
        code, _, body = request(port, "/health", timeout=3)  # waitress defaults: no answer for ~30 s
        assert code in (200, 503) and "ok" in json.loads(body)
        assert time.monotonic() - t0 < 3
        # an idle client is cut after the channel timeout, so holding sockets costs it a reconnect
        first = idle[0]
        first.settimeout(CHANNEL_TIMEOUT_S + 2 * CLEANUP_INTERVAL_S + 5)
        t0 = time.monotonic()
        assert first.recv(1) == b""
        assert time.monotonic() - t0 <= CHANNEL_TIMEOUT_S + 2 * CLEANUP_INTERVAL_S + 5
    finally:
        for s in idle:
            s.close()
        app.stop()


# --- item 4: bind address, Host header, token ---------------------------------------------------

def test_host_header_must_name_this_dashboard(bank, video, tmp_path):
    app = serving(bank, video, tmp_path)  # the default loopback bind: DNS rebinding reaches it too
    try:
        port = app.dashboard.port
        for good in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"):
            assert request(port, "/api/status", headers={"Host": good})[0] == 200, good
        for bad in (f"evil.example:{port}", "evil.example", f"192.168.1.20:{port}"):
            code, _, body = request(port, "/api/status", headers={"Host": bad})
            assert code == 400 and "not a name this dashboard serves" in json.loads(body)["error"], bad
    finally:
        app.stop()


def test_non_loopback_bind_needs_a_token(bank, tmp_path):
    r = serve_cli("--bank", str(bank), "--video", "none.avi", "--host", "0.0.0.0", "--port", "0",
                  "--out", str(tmp_path / "o"), timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--token" in errors[0] and "EDGE_FOCT_TOKEN" in errors[0]
    assert not (tmp_path / "o").exists()  # refused before any work


def test_token_beyond_loopback(bank, video, tmp_path):
    app = serving(bank, video, tmp_path, host="0.0.0.0", token=TOKEN)
    try:
        port = app.dashboard.port
        code, headers, _ = request(port, "/api/status")
        assert code == 401 and headers["www-authenticate"].startswith("Bearer")
        assert request(port, "/api/status", headers={"Authorization": "Bearer wrong-token"})[0] == 401
        assert request(port, "/api/status", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        code, headers, body = request(port, f"/?token={TOKEN}")  # a browser, once
        assert code == 200 and b'id="live"' in body
        cookie = headers["set-cookie"]
        assert cookie.startswith(f"edge_foct_token={TOKEN}") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert request(port, "/api/status", headers={"Cookie": cookie.split(";")[0]})[0] == 200
        assert request(port, "/health")[0] in (200, 503)  # liveness probes need no token
        # a wildcard bind answers to IP literals (the station's LAN address), not to other names
        assert request(port, "/api/status", headers={"Host": f"10.1.2.3:{port}",
                                                      "Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert request(port, "/api/status", headers={"Host": "evil.example",
                                                      "Authorization": f"Bearer {TOKEN}"})[0] == 400
    finally:
        app.stop()


def test_token_from_the_environment_and_the_warning(bank, video, tmp_path):
    env = {**os.environ, "EDGE_FOCT_TOKEN": TOKEN}
    r = subprocess.run([sys.executable, "-m", "edge_foct.edge_app", "serve", "--bank", str(bank), "--video",
                        str(video), "--host", "0.0.0.0", "--port", "0", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "dashboard listens on every interface" in r.stderr


# --- item 5: event lines whole or absent ---------------------------------------------------------

FULL_DISK = textwrap.dedent("""
    import json, resource, signal, sys
    from edge_foct.edge_app.serve.outputs import EventLog
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    log = EventLog(sys.argv[1])
    for i in range(100):
        log.write({"run": "20260101T000000Z", "frame": i, "pad": "x" * (i % 7) * 9})
    log.close()
    print(json.dumps({"errors": log.errors}))
""")


def test_event_lines_are_whole_or_absent_when_the_disk_fills(tmp_path):
    path = tmp_path / "events.jsonl"
    r = subprocess.run([sys.executable, "-c", FULL_DISK, str(path), "2000"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    errors = json.loads(r.stdout)["errors"]
    text = path.read_text()
    assert 0 < errors < 100 and text.endswith("\n")
    lines = text.splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(len(lines)))  # every line whole
    assert len(lines) + errors == 100  # each event written or counted as lost
    assert f"{errors} events of this run were lost" in r.stderr
    log = EventLog(path)  # the next run appends onto whole lines
    log.write({"run": "next", "frame": 0})
    log.close()
    assert log.repaired == 0 and json.loads(path.read_text().splitlines()[-1])["run"] == "next"


def test_a_fragment_left_by_an_earlier_run_is_cut_and_reported(tmp_path, caplog):
    path = tmp_path / "events.jsonl"
    path.write_text('{"run":"a","frame":0}\n{"run":"a","frame":1}\n{"run":"202612')  # a disk that filled up
    log = EventLog(path)
    log.write({"run": "b", "frame": 0})
    log.close()
    assert log.repaired == 1
    assert [json.loads(line)["run"] for line in path.read_text().splitlines()] == ["a", "a", "b"]
    assert any("cut a partial last line (14 bytes)" in r.getMessage() for r in caplog.records)


# --- item 6: every numeric option checked -------------------------------------------------------

@pytest.mark.parametrize("args,named", [
    (("--port", "70000"), "--port"), (("--port", "-5"), "--port"), (("--host", "999.1.1.1"), "--host"),
    (("--size", "100"), "--size"), (("--size", "8"), "--size"), (("--size", "0"), "--size"),
    (("--max-frames", "0"), "--max-frames"), (("--fps", "-1"), "--fps"), (("--keep-snapshots", "-1"), "--keep-snapshots"),
    (("--queue", "0"), "--queue"), (("--save-every", "0"), "--save-every"), (("--method", "nope"), "--method"),
])
def test_bad_option_values_are_one_line(tmp_path, args, named):
    r = serve_cli("--demo", "--out", str(tmp_path / "o"), *args, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0], r.stderr
    assert not (tmp_path / "o").exists()


def test_keep_snapshots_zero_writes_none(tmp_path):
    snaps = Snapshots(tmp_path / "snapshots", "20260101T000000Z", keep=0)
    assert snaps.save(1, b"png", b"jpg") is None and not (tmp_path / "snapshots").exists()
    with pytest.raises(ValueError):
        Snapshots(tmp_path / "s", "20260101T000000Z", keep=-1)


# --- item 7: retention across runs, one serve per --out -----------------------------------------

def test_snapshot_retention_counts_earlier_runs(tmp_path):
    folder = tmp_path / "snapshots"
    for run, frames in (("20260101T000000Z", range(3)), ("20260101T000100Z", range(3)), ("20260102T000000Z", (7, 8))):
        snaps = Snapshots(folder, run, keep=2)
        for f in frames:
            snaps.save(f, b"png", b"jpg")
    left = sorted(p.name for p in folder.iterdir())
    assert left == ["20260102T000000Z-0000007_frame.png", "20260102T000000Z-0000007_overlay.jpg",
                    "20260102T000000Z-0000008_frame.png", "20260102T000000Z-0000008_overlay.jpg"]
    (folder / "notes.txt").write_text("not a snapshot")
    Snapshots(folder, "20260103T000000Z", keep=1)  # opening trims too
    assert sorted(p.name for p in folder.iterdir()) == ["20260102T000000Z-0000008_frame.png",
                                                         "20260102T000000Z-0000008_overlay.jpg", "notes.txt"]


def test_two_serves_on_one_out_refused(bank, video, tmp_path):
    app = serving(bank, video, tmp_path, dashboard=False)
    try:
        r = serve_cli("--bank", str(bank), "--video", str(video), "--out", str(tmp_path), "--no-dashboard",
                      timeout=60)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"in use by another edge-foct serve (pid {os.getpid()})" in errors[0]
    finally:
        app.stop()
    r = serve_cli("--bank", str(bank), "--video", str(video), "--out", str(tmp_path), "--no-dashboard",
                  "--max-frames", "2", timeout=120)
    assert r.returncode == 0, r.stderr  # released on stop


# --- item 8: a folder source names the file and remembers it ------------------------------------

def test_folder_events_name_the_file_and_a_restart_skips_seen_files(bank, demo_category, tmp_path):
    folder, out = tmp_path / "incoming", tmp_path / "out"
    folder.mkdir()
    images = list_images([str(demo_category / "test" / "good"), str(demo_category / "test" / "defect")])
    for name, src in zip("abcd", images):
        (folder / f"{name}.png").write_bytes(src.read_bytes())

    def run(max_frames: int | None, while_running=None) -> ServeApp:
        stop = threading.Event()
        app = ServeApp(ServeOptions(bank=bank, out=out, dashboard=False, max_frames=max_frames, lossless=True),
                       FolderSource(folder, poll_s=0.02, stop=stop, state=out / FOLDER_STATE), stop_event=stop)
        app.start()
        if while_running is not None:
            while_running(app)
        if max_frames is not None:
            assert app.wait(30)
        app.stop()
        return app

    run(4)
    assert [e["file"] for e in read_events(out / "events.jsonl")] == ["a.png", "b.png", "c.png", "d.png"]

    def add_one(app: ServeApp) -> None:
        time.sleep(1.0)  # a restart that re-inspected would be at it by now
        assert app.live.counters["frames"] == 0
        (folder / "e.png").write_bytes(images[4].read_bytes())
        assert wait_for(lambda: app.live.counters["frames"] == 1, timeout=30)

    run(None, add_one)
    assert [e["file"] for e in read_events(out / "events.jsonl")] == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    state = json.loads((out / FOLDER_STATE).read_text())
    assert sorted(state["files"]) == ["a.png", "b.png", "c.png", "d.png", "e.png"]


# --- item 11: HEAD, SIGTERM with a viewer -------------------------------------------------------

def test_head_gets_headers_and_no_body(bank, video, tmp_path):
    app = serving(bank, video, tmp_path)
    try:
        port = app.dashboard.port
        assert wait_for(lambda: app.live.counters["frames"] >= 2)
        for path in ("/", "/api/status", "/health", "/frame.jpg"):
            reply = raw(port, f"HEAD {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), (path, head)
            assert int(re.search(rb"Content-Length: (\d+)", head).group(1)) > 0 and body == b"", path
        t0 = time.monotonic()
        reply = raw(port, "HEAD /stream.mjpg HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", timeout=5)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert b"multipart/x-mixed-replace" in head and body == b""
        assert time.monotonic() - t0 < 4  # answered and closed, not streamed until the timeout
        code, _, _ = request(port, "/stream.mjpg", method="HEAD")  # no stream slot is held by HEAD
        assert code == 200
    finally:
        app.stop()


def test_sigterm_with_a_live_viewer_logs_no_traceback(bank, video, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "edge_foct.edge_app", "serve", "--bank", str(bank), "--video",
                             str(video), "--loop", "--fps", "20", "--port", "0", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port, seen = None, []
        end = time.monotonic() + 90
        while port is None and time.monotonic() < end:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"dashboard: http://127\.0\.0\.1:(\d+)/", line)
            port = int(m.group(1)) if m else None
        assert port is not None, "".join(seen)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as viewer:
            viewer.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            got = b""
            for _ in range(100):  # bounded: until two frames have arrived
                got += viewer.recv(65536)
                if got.count(b"--edgefoctframe") >= 2:
                    break
            assert got.count(b"--edgefoctframe") >= 2
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "Exception when servicing" not in stderr, stderr


def test_dashboard_stop_with_viewers_attached_is_clean(monkeypatch, caplog):
    """Five start/stop cycles of the dashboard, each with every MJPEG slot taken by a viewer: no
    waitress error and no exception in any thread (before: every cycle logged one)."""
    from edge_foct.edge_app.serve.dashboard import MAX_STREAMS, Dashboard
    from edge_foct.edge_app.serve.live import LiveStatus

    crashed = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(repr(args.exc_value)))
    for _ in range(5):
        live = LiveStatus({"threshold": 1.0})
        dash = Dashboard(live, "127.0.0.1", 0)
        dash.start()
        done = threading.Event()

        def publish() -> None:
            i = 0
            while not done.is_set() and i < 2000:  # bounded
                live.publish({"frame": i, "defective": False, "threshold": 1.0, "time": time.time(), "score": 0.0,
                              "latency_ms": {"total": 1.0}}, b"\xff\xd8" + bytes(2000))
                i += 1
                time.sleep(0.02)

        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()
        viewers = [socket.create_connection(("127.0.0.1", dash.port), timeout=5) for _ in range(MAX_STREAMS)]
        try:
            for v in viewers:
                v.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert v.recv(4096).startswith(b"HTTP/1.1 200")
            dash.stop()
            assert not dash._thread.is_alive()
        finally:
            done.set()
            publisher.join(5)
            for v in viewers:
                v.close()
    errors = [r.getMessage() for r in caplog.records if r.name.startswith("waitress") and r.levelname == "ERROR"]
    assert errors == [] and crashed == []


# --- item 12: a live source down at start-up is retried -----------------------------------------

class DownAtStart:
    """A live source that is down for its first ``refusals`` opens, then streams one frame."""

    live = True
    name = "fake:down-at-start"

    def __init__(self, frame: np.ndarray, refusals: int) -> None:
        self.frame, self.refusals, self.opens, self.is_open = frame, refusals, 0, False

    def open(self) -> None:
        self.opens += 1
        if self.opens <= self.refusals:
            raise SourceError("fake camera not up yet", retry=True)
        self.is_open = True

    def read(self):
        if not self.is_open:
            return None
        time.sleep(0.005)
        return self.frame

    def close(self) -> None:
        self.is_open = False


def test_live_source_down_at_start_is_retried(bank, demo_category, tmp_path):
    frame = read_image(list_images([str(demo_category / "test" / "good")])[0])
    source = DownAtStart(frame, refusals=3)
    app = ServeApp(ServeOptions(bank=bank, out=tmp_path, dashboard=False, max_frames=5, backoff=(0.01, 0.04)),
                   source)
    app.start()  # does not raise: the capture thread retries
    assert app.wait(60)
    result = app.stop()
    assert result.frames == 5 and source.opens == 4


def test_rtsp_down_at_start_keeps_retrying_until_stopped(bank, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = tmp_path / "stderr.log"
    with open(err, "w") as errf:
        proc = subprocess.Popen([sys.executable, "-m", "edge_foct.edge_app", "serve", "--bank", str(bank), "--rtsp",
                                 f"rtsp://127.0.0.1:{port}/line1", "--no-dashboard", "--out", str(tmp_path / "out")],
                                stdout=subprocess.PIPE, stderr=errf, text=True)
        try:
            # retrying: it said so (the signal handlers are installed by then, however loaded the box)
            assert wait_for(lambda: proc.poll() is not None or "retrying every" in err.read_text(), timeout=120)
            time.sleep(1.5)
            assert proc.poll() is None, err.read_text()  # still up, retrying (it exited at once before)
            proc.send_signal(signal.SIGTERM)
            stdout, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = err.read_text()
    assert proc.returncode == 0, stderr
    assert "cannot connect" in stderr and "retrying every 0.5 s" in stderr and "0 frames (stopped)" in stdout


def test_patchcore_plus_online_memory_survives_a_serve_restart(tmp_path):
    """serve's StateStore keeps patchcore+/online's learnt rows (seed 001 Table 6) across a restart:
    the restored method scores as the one that learnt them, a fresh one (the bank alone) does not."""
    from edge_foct.edge_app.serve.state import StateStore
    from edge_foct.runtime.methods import SupportSet, make_params
    from edge_foct.runtime.methods.patchcore_plus import PatchCorePlus

    rng = np.random.default_rng(4)
    feats = np.abs(rng.random((2, 36, 16)).astype(np.float32))
    params = make_params("patchcore+", {"coreset_ratio": 0.3}, preset="online")
    method = PatchCorePlus.fit(SupportSet(feats, None, (6, 6)), params)
    method.set_gate(1e9)
    q = feats[1] + 0.2 * rng.random((36, 16)).astype(np.float32)
    method.score(q)  # admitted
    assert len(method.memory) > 0
    store = StateStore(tmp_path / "state.npz", "bank-sha", "patchcore+")
    store.save(method, None, frames=1)
    fresh = PatchCorePlus.from_arrays(method.arrays(), params)
    learnt = method.score(q, update=False).scores
    assert not np.allclose(fresh.score(q, update=False).scores, learnt, rtol=1e-3)
    store.restore(fresh, None)
    np.testing.assert_allclose(fresh.score(q, update=False).scores, learnt, rtol=1e-6)


def test_dashboard_stop_when_the_loop_closed_the_trigger_first():
    """The loop thread may see the closing flag and close waitress's trigger before stop() pulls it
    (an EBADF traceback at SIGTERM, seen once): stop() then has nothing to wake and returns cleanly."""
    from edge_foct.edge_app.serve.dashboard import Dashboard
    from edge_foct.edge_app.serve.live import LiveStatus

    dash = Dashboard(LiveStatus({"threshold": 1.0}), "127.0.0.1", 0)
    dash.start()
    dash.server.trigger.close()  # the state the race leaves: loop alive, trigger gone
    dash.stop()
    assert not dash._thread.is_alive()
