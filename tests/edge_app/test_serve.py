"""`edge-foct serve`: a headless run on a generated video, the HTTP API, and the faults a station sees.

Every network request goes to 127.0.0.1, in loops bounded in count and time.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edge_foct.edge_app.serve.app import ServeApp, ServeOptions
from edge_foct.edge_app.serve.demo import write_video
from edge_foct.edge_app.serve.sources import CaptureSource, CaptureThread, SourceError
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.config import Config
from edge_foct.runtime.fit import fit_bank
from edge_foct.runtime.image_io import list_images, read_image
from edge_foct.runtime.knn import nearest_sq_dist
from edge_foct.runtime.methods import METHODS, PatchScores
from edge_foct.runtime.methods.patchcore import PatchCore

SIZE = 64
N_FRAMES = 12


class FakeOnline(PatchCore):
    """PatchCore + an episodic memory: the worst patch of every frame under the gate is kept."""

    name = "fake-online"
    online = True

    def __init__(self, memory, params) -> None:
        super().__init__(memory, params)
        self.episodic = np.zeros((0, self.memory.shape[1]), np.float32)  # (E, D)
        self.gate: float | None = None

    def set_gate(self, threshold):
        self.gate = threshold

    def score(self, features, *, update=True):
        mem = np.concatenate([self.memory, self.episodic])
        dist, _ = nearest_sq_dist(features, mem)  # (Q,)
        if update and (self.gate is None or dist.max() <= self.gate):
            self.episodic = np.concatenate([self.episodic, features[[int(dist.argmax())]]])[-50:]
        return PatchScores(dist, {"episodic": int(self.episodic.shape[0])})

    def episodic_state(self):
        return {"rows": self.episodic}

    def restore_episodic(self, arrays):
        rows = np.asarray(arrays.get("rows", np.zeros((0, self.memory.shape[1]))), np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.memory.shape[1]:
            raise ValueError(f"episodic rows {rows.shape} do not match the memory width {self.memory.shape[1]}")
        self.episodic = rows


def make_bank(backbone: Path, category: Path, out: Path, method: str = "patchcore") -> Path:
    images = [read_image(p) for p in list_images([str(category / "train" / "good")])[:2]]
    cfg = Config().replace(input={"resize": SIZE, "crop": SIZE}, method={"name": method}, threshold={"views": 2})
    return fit_bank(Backbone.load(backbone), images, cfg).save(out)


@pytest.fixture(scope="module")
def bank(tmp_path_factory, random_backbone, demo_category) -> Path:
    return make_bank(random_backbone, demo_category, tmp_path_factory.mktemp("serve") / "bank")


@pytest.fixture(scope="module")
def video(tmp_path_factory, demo_category) -> Path:
    """N_FRAMES frames: the demo test images, good and defective, in turn."""
    paths = list_images([str(demo_category / "test" / "good"), str(demo_category / "test" / "defect")])
    frames = [read_image(paths[i % len(paths)]) for i in range(N_FRAMES)]
    return write_video(frames, tmp_path_factory.mktemp("video") / "parts.avi", SIZE)


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def wait_for(cond, timeout: float = 30.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return False


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def serve_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_foct.edge_app", "serve", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_headless_video_run_writes_events_snapshots_and_state(bank, video, tmp_path):
    out = tmp_path / "out"
    r = serve_cli("--bank", str(bank), "--video", str(video), "--out", str(out), "--no-dashboard",
                  "--threshold", "0")
    assert r.returncode == 0, r.stderr
    assert f"{N_FRAMES} frames (source ended)" in r.stdout
    assert "threshold 0 (user override" in r.stderr
    events = read_events(out / "events.jsonl")
    assert [e["frame"] for e in events] == list(range(N_FRAMES))  # a file is read losslessly, in order
    for e in events:
        assert e["defective"] is True and e["threshold"] == 0.0 and e["score"] > 0
        assert set(e["latency_ms"]) >= {"queue", "preprocess", "backbone", "method", "map", "render", "total"}
        assert (out / e["snapshot"]).is_file()
    snaps = sorted((out / "snapshots").iterdir())
    assert len(snaps) == 2 * N_FRAMES
    assert all(p.stat().st_size > 100 for p in snaps)
    with np.load(out / "episodic.npz", allow_pickle=False) as z:
        assert int(z["meta.frames"]) == N_FRAMES


def test_api_while_serving(bank, video, tmp_path):
    source = CaptureSource(video, "video", fps=30, loop=True)
    app = ServeApp(ServeOptions(bank=bank, out=tmp_path, port=0, save_every=0.5), source)
    app.start()
    try:
        base = app.dashboard.url
        assert base.startswith("http://127.0.0.1:")
        assert wait_for(lambda: app.live.counters["frames"] >= 5)
        code, body, ctype = get(base + "health")
        assert code == 200 and json.loads(body)["ok"] is True
        code, body, _ = get(base + "api/status")
        status = json.loads(body)
        assert code == 200 and status["method"] == "patchcore" and status["threshold_rule"] == json.loads((bank / "manifest.json").read_text())["threshold"]["rule"]
        assert status["latest"]["frame"] >= 4 and status["latency_ms"]["p50"] > 0
        assert status["latency_ms"]["p50"] <= status["latency_ms"]["p95"] <= status["latency_ms"]["p99"]
        assert len(status["trend"]) >= 5 and status["counters"]["dropped"] >= 0
        code, body, _ = get(base + "api/events?after=1&limit=3")
        ids = [e["frame"] for e in json.loads(body)["events"]]
        assert len(ids) == 3 and 1 < ids[0] < ids[1] < ids[2]  # the first 3 after frame 1 (some may be dropped)
        code, body, _ = get(base + "api/events?limit=2")
        newest = json.loads(body)["events"]
        assert len(newest) == 2 and newest[0]["frame"] < newest[1]["frame"]
        assert get(base + "api/events?after=x")[0] == 400
        code, body, ctype = get(base + "frame.jpg")
        assert code == 200 and ctype == "image/jpeg" and body[:2] == b"\xff\xd8"
        code, body, ctype = get(base)
        assert code == 200 and b'id="live"' in body and "text/html" in ctype
        assert get(base + "static/app.js")[0] == 200
        assert get(base + "nowhere")[0] == 404
        with urllib.request.urlopen(base + "stream.mjpg", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            data = b""
            for _ in range(200):  # bounded: two frames of the live stream
                data += r.read1(65536)
                if data.count(b"--edgefoctframe") >= 2:
                    break
        assert data.count(b"\xff\xd8") >= 1
    finally:
        result = app.stop()
    assert result.frames >= 5 and result.reason == "stopped"
    with pytest.raises(OSError):  # the server is closed
        get(base + "health", timeout=2)


def test_video_that_ends_stops_cleanly(bank, video, tmp_path):
    app = ServeApp(ServeOptions(bank=bank, out=tmp_path, dashboard=False, lossless=True),
                   CaptureSource(video, "video"))
    app.start()
    assert app.wait(60)
    result = app.stop()
    assert (result.frames, result.reason) == (N_FRAMES, "source ended")
    assert app.live.source_status == "ended"


def test_missing_camera_is_a_clear_error(bank, tmp_path):
    with pytest.raises(SourceError, match=r"camera 57 cannot be opened .*--camera N"):
        CaptureSource(57, "camera").open()
    r = serve_cli("--bank", str(bank), "--camera", "57", "--out", str(tmp_path), "--no-dashboard")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: camera 57 cannot be opened")
    assert "Traceback" not in r.stderr


class FlakySource:
    """A live source that drops out after ``drop_after`` frames and refuses ``refusals`` reconnects."""

    live = True
    name = "fake:flaky"

    def __init__(self, frame: np.ndarray, drop_after: int, refusals: int) -> None:
        self.frame, self.drop_after, self.refusals = frame, drop_after, refusals
        self.reads, self.opens, self.is_open = 0, 0, False

    def open(self) -> None:
        self.opens += 1
        if 1 < self.opens <= 1 + self.refusals:
            raise SourceError("fake camera still unplugged")
        self.is_open = True

    def read(self):
        assert self.is_open, "read from a closed source"
        self.reads += 1
        if self.reads == self.drop_after + 1:
            return None  # the cable is pulled once
        time.sleep(0.005)
        return self.frame

    def close(self) -> None:
        self.is_open = False


def test_stream_that_drops_and_comes_back(bank, demo_category, tmp_path):
    frame = read_image(list_images([str(demo_category / "test" / "good")])[0])
    source = FlakySource(frame, drop_after=5, refusals=2)
    app = ServeApp(ServeOptions(bank=bank, out=tmp_path, dashboard=False, max_frames=15,
                                backoff=(0.01, 0.04)), source)  # the app default is 0.5 s .. 8 s
    app.start()
    assert app.wait(60)
    result = app.stop()
    assert result.frames == 15 and result.reason == "max frames"
    assert app.capture.reconnects == 1 and source.opens == 4  # first open + 2 refused + 1 accepted
    assert app.live.counters["reconnects"] == 1


class HangingSource(FlakySource):
    """A live source whose read blocks (a camera driver that never returns) after ``frames`` frames."""

    def __init__(self, frame: np.ndarray, frames: int) -> None:
        super().__init__(frame, drop_after=10**9, refusals=0)
        self.frames, self.release = frames, threading.Event()

    def read(self):
        if self.reads >= self.frames:
            self.release.wait(60)  # blocked in the driver until the test lets go
        return super().read()


def test_stop_with_a_capture_blocked_in_the_driver_says_so_and_returns(bank, demo_category, tmp_path, caplog,
                                                                        monkeypatch):
    from edge_foct.edge_app.serve import app as app_module

    monkeypatch.setattr(app_module, "CAPTURE_JOIN_S", 0.3)
    frame = read_image(list_images([str(demo_category / "test" / "good")])[0])
    source = HangingSource(frame, frames=4)
    app = ServeApp(ServeOptions(bank=bank, out=tmp_path, dashboard=False), source)
    app.start()
    try:
        assert wait_for(lambda: source.reads >= 4 and app.live.counters["frames"] >= 4, 60)
        t = time.monotonic()
        result = app.stop()
        assert time.monotonic() - t < 10 and result.frames >= 4
        assert app.capture.is_alive()
        assert any("did not stop within" in r.getMessage() and "fake:flaky" in r.getMessage()
                   for r in caplog.records)
        assert (tmp_path / "events.jsonl").is_file()  # what was inspected is on disk
    finally:
        source.release.set()
    app.capture.join(5)
    assert not app.capture.is_alive()


def test_full_disk_for_snapshots_is_logged_and_serving_goes_on(bank, video, tmp_path, caplog):
    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    app = ServeApp(ServeOptions(bank=bank, out=tmp_path, dashboard=False, lossless=True, threshold=0.0),
                   CaptureSource(video, "video"), snapshot_writer=full_disk)
    app.start()
    assert app.wait(60)
    result = app.stop()
    assert result.frames == N_FRAMES and result.reason == "source ended"
    assert app.live.counters["snapshot_errors"] == N_FRAMES and app.live.counters["snapshots"] == 0
    assert any("No space left on device" in r.getMessage() for r in caplog.records)
    events = read_events(tmp_path / "events.jsonl")
    assert len(events) == N_FRAMES and all(e["snapshot"] is None and e["defective"] for e in events)


def test_kill_9_then_restart_restores_the_state(bank, video, tmp_path):
    out = tmp_path / "out"
    args = ["--bank", str(bank), "--video", str(video), "--out", str(out), "--no-dashboard", "--loop",
            "--save-every", "0.2"]
    proc = subprocess.Popen([sys.executable, "-m", "edge_foct.edge_app", "serve", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        state = out / "episodic.npz"

        def saved_enough() -> bool:
            if not state.exists():
                return False
            with np.load(state, allow_pickle=False) as z:
                return int(z["meta.frames"]) >= 30

        assert wait_for(saved_enough, timeout=90), "no state saved"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    with np.load(state, allow_pickle=False) as z:  # the atomic write left a whole file
        saved = len(z["stream.scores"])
    assert saved >= 20
    r = serve_cli(*args[:-3], "--max-frames", "3")
    assert r.returncode == 0, r.stderr
    assert f"restored {state}" in r.stderr and f"{saved} stream scores" in r.stderr
    # a state file that is garbage is reported, set aside and not used
    state.write_bytes(b"PK\x03\x04 not a zip")
    r = serve_cli(*args[:-3], "--max-frames", "3")
    assert r.returncode == 0, r.stderr
    assert "is unusable" in r.stderr and "starting empty" in r.stderr
    aside = list(out.glob("episodic.npz.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"PK\x03\x04 not a zip"
    with np.load(state, allow_pickle=False) as z:  # a fresh, valid state replaced it
        assert int(z["meta.frames"]) == 3


def test_episodic_memory_saved_and_restored(random_backbone, demo_category, video, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, FakeOnline.name, FakeOnline)
    bank = make_bank(random_backbone, demo_category, tmp_path / "bank", method=FakeOnline.name)
    opts = ServeOptions(bank=bank, out=tmp_path / "out", dashboard=False, lossless=True, threshold=1e9)
    app = ServeApp(opts, CaptureSource(video, "video"))
    app.start()
    assert app.wait(60)
    app.stop()
    learnt = app.loop.session.inspector.method.episodic.copy()
    assert learnt.shape[0] == N_FRAMES
    again = ServeApp(opts, CaptureSource(video, "video"))
    again.start()
    method = again.loop.session.inspector.method
    assert "restored" in again.live.info["state"] and f"{N_FRAMES} episodic rows" in again.live.info["state"]
    assert again.wait(60)
    again.stop()
    np.testing.assert_array_equal(method.episodic[:N_FRAMES], learnt)
    # rows of the wrong width: the restore fails, the file is set aside and the method starts empty
    state = tmp_path / "out" / "episodic.npz"
    with np.load(state, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["episodic.rows"] = np.ones((3, 7), np.float32)
    np.savez(state, **arrays)
    third = ServeApp(opts, CaptureSource(video, "video"))
    third.start()
    assert "unusable" in third.live.info["state"]
    assert third.wait(60)
    third.stop()
    assert third.loop.session.inspector.method.episodic.shape[0] == N_FRAMES  # started empty
    assert len(list(state.parent.glob("episodic.npz.corrupt-*"))) == 1


def test_episodic_gate_stays_at_or_below_the_learnt_threshold(random_backbone, demo_category, video, tmp_path,
                                                              monkeypatch):
    """A stream rule set to rise (2 calibration frames, median + 100 sigmas) lifts the verdict threshold
    above the learnt one; the online memory's gate stays at the learnt value."""
    monkeypatch.setitem(METHODS, FakeOnline.name, FakeOnline)
    monkeypatch.setattr("edge_foct.edge_app.serve.app.stream_k", lambda k: 50.0 * k)  # k = 2 support images
    gates = []
    monkeypatch.setattr(FakeOnline, "set_gate", lambda self, t: (gates.append(t), setattr(self, "gate", t)))
    bank = make_bank(random_backbone, demo_category, tmp_path / "bank", method=FakeOnline.name)
    app = ServeApp(ServeOptions(bank=bank, out=tmp_path / "out", dashboard=False, lossless=True,
                                calibrate_frames=2), CaptureSource(video, "video"))
    app.start()
    assert app.wait(60)
    app.stop()
    stream = app.loop.stream
    assert stream.params.k == 100.0 and stream.params.frames == 2  # the bank's support size reached stream_k
    events = [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    assert max(e["threshold"] for e in events) > stream.start  # the verdict threshold did rise
    assert gates and max(gates) == pytest.approx(stream.start)


def test_folder_source_sees_new_files(bank, demo_category, tmp_path):
    from edge_foct.edge_app.serve.sources import FolderSource

    folder = tmp_path / "incoming"
    folder.mkdir()
    first = list_images([str(demo_category / "test" / "good")])
    (folder / "a.png").write_bytes(first[0].read_bytes())
    opts = ServeOptions(bank=bank, out=tmp_path / "out", dashboard=False, max_frames=3)
    stop = threading.Event()  # shared, so a waiting poll wakes up on shutdown
    app = ServeApp(opts, FolderSource(folder, poll_s=0.02, stop=stop), stop_event=stop)
    app.start()
    assert wait_for(lambda: app.live.counters["frames"] == 1)
    (folder / "b.png").write_bytes(first[1].read_bytes())
    (folder / "c.png").write_bytes(first[2].read_bytes())
    assert app.wait(30)
    assert app.stop().frames == 3


def test_foct_episodic_memory_survives_a_restart(random_backbone, demo_category, video, tmp_path):
    if "oct" not in METHODS:
        pytest.skip("the oct/foct methods are not registered in runtime/methods")
    bank = make_bank(random_backbone, demo_category, tmp_path / "bank", method="oct")
    opts = ServeOptions(bank=bank, out=tmp_path / "out", dashboard=False, lossless=True, threshold=1e9)
    first = ServeApp(opts, CaptureSource(video, "video"))
    first.start()
    assert first.wait(120)
    first.stop()
    rows = sum(v.shape[0] for v in first.loop.session.inspector.method.episodic_state().values())
    assert rows > 0  # the stream taught it something
    second = ServeApp(ServeOptions(**{**opts.__dict__, "max_frames": 1}), CaptureSource(video, "video"))
    second.start()
    assert "restored" in second.live.info["state"] and f" {rows} episodic rows" in second.live.info["state"]
    assert second.wait(120)
    second.stop()


def test_sigterm_stops_cleanly_and_saves(bank, video, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "edge_foct.edge_app", "serve", "--bank", str(bank), "--video",
                             str(video), "--loop", "--out", str(out), "--no-dashboard", "--save-every", "1000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (out / "events.jsonl").is_file()
                        and len((out / "events.jsonl").read_text().splitlines()) >= 5, timeout=90)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "SIGTERM: stopping" in stderr and "frames (stopped)" in stdout
    with np.load(out / "episodic.npz", allow_pickle=False) as z:  # saved on the way out, not by the timer
        assert int(z["meta.frames"]) >= 5


def test_demo_runs_in_one_command(random_backbone, tmp_path):
    out = tmp_path / "demo"
    r = serve_cli("--demo", "--backbone", str(random_backbone), "--size", str(SIZE), "--out", str(out),
                  "--no-dashboard", "--max-frames", "4", "--fps", "100")
    assert r.returncode == 0, r.stderr
    assert "4 frames (max frames)" in r.stdout and "demo stream" in r.stderr
    from edge_foct.runtime.threshold import family_for

    assert "threshold" in r.stderr and family_for(2, 0) in r.stderr and "calibrating from the first 50 frames" in r.stderr
    assert len(read_events(out / "events.jsonl")) == 4


def test_snapshots_keep_only_the_newest(tmp_path):
    from edge_foct.edge_app.serve.outputs import Snapshots

    snaps = Snapshots(tmp_path / "snapshots", "run", keep=2)
    paths = [snaps.save(i, b"png", b"jpg") for i in range(5)]
    assert paths[-1] == "snapshots/run-0000004_overlay.jpg"
    left = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert left == ["run-0000003_frame.png", "run-0000003_overlay.jpg", "run-0000004_frame.png",
                    "run-0000004_overlay.jpg"]
    assert snaps.saved == 5 and snaps.errors == 0
