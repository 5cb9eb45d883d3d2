"""The inference loop: frame -> Inspection -> stream threshold -> event, snapshot, live view.

Runs in one thread. Saves the learnt state (episodic memory + threshold window) every
``save_every`` seconds and once more when it stops, whatever stopped it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2

from edge_foct.runtime.threshold import StreamThreshold

from edge_foct.edge_app.inspect_session import Session
from edge_foct.edge_app.json_out import finite_or_none
from edge_foct.edge_app.render import overlay_bgr
from edge_foct.edge_app.serve.live import LiveStatus
from edge_foct.edge_app.serve.outputs import EventLog, Snapshots
from edge_foct.edge_app.serve.sources import CaptureThread, Frame
from edge_foct.edge_app.serve.state import StateStore

log = logging.getLogger("edge_foct.serve")

JPEG_QUALITY = 85


@dataclass
class LoopResult:
    frames: int
    reason: str  # why it stopped: "source ended", "max frames", "stopped"


class InferenceLoop:
    def __init__(self, session: Session, capture: CaptureThread, live: LiveStatus, events: EventLog,
                 snapshots: Snapshots, store: StateStore, stream: StreamThreshold | None, run: str,
                 save_every: float = 30.0, max_frames: int | None = None, show: bool = False,
                 sinks: Sequence[Callable[[dict[str, Any]], None]] = ()) -> None:
        self.session, self.capture, self.live = session, capture, live
        self.events, self.snapshots, self.store, self.stream = events, snapshots, store, stream
        self.run_id, self.save_every, self.max_frames, self.show = run, save_every, max_frames, show
        self.sinks = tuple(sinks)  # each frame's event also goes to these (the broker outbox, metrics)
        self.frames = 0

    def run(self, stop: threading.Event) -> LoopResult:
        reason, last_save = "stopped", time.monotonic()
        try:
            while not stop.is_set():
                frame = self.capture.get(timeout=0.25)
                if frame is not None:
                    self.process(frame)
                self._refresh()
                if frame is None and self.capture.finished:
                    reason = "source ended"
                    break
                if self.max_frames is not None and self.frames >= self.max_frames:
                    reason = "max frames"
                    break
                if time.monotonic() - last_save >= self.save_every:
                    self.save()
                    last_save = time.monotonic()
        finally:
            self.save()
            self.events.close()
        return LoopResult(self.frames, reason)

    def process(self, frame: Frame) -> None:
        inspector = self.session.inspector
        t0 = time.perf_counter()
        queued_ms = max(0.0, (time.time() - frame.time) * 1e3)
        r = inspector.inspect(frame.rgb)
        if self.stream is not None:
            value = self.stream.update(r.score)
            if value != inspector.threshold:
                inspector.threshold = value  # the next frame's verdict
                inspector.method.set_gate(self.stream.gate)  # and the episodic gate, capped at the learnt value
            if self.stream.calibrated:  # the bank's reliability warning gives way to the line's own
                self.live.set_warning(self.stream.drift_warning)
        t1 = time.perf_counter()
        overlay = overlay_bgr(r.crop, r.anomaly_map, r.threshold, r.score, r.defective, self.session.warning)
        ok, jpg = cv2.imencode(".jpg", overlay, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        snapshot = None
        if r.defective:
            ok_png, png = cv2.imencode(".png", cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
            snapshot = self.snapshots.save(frame.id, png.tobytes(), jpg.tobytes())
        t2 = time.perf_counter()
        latency = {"queue": round(queued_ms, 3), **r.timings_ms, "render": round((t2 - t1) * 1e3, 3)}
        latency["total"] = round((t2 - t0) * 1e3, 3)  # this frame's inference + outputs, queue excluded
        event = {"run": self.run_id, "frame": frame.id, "time": round(frame.time, 4),
                 "score": finite_or_none(round(float(r.score), 6)), "defective": bool(r.defective),
                 "threshold": round(float(r.threshold), 6), "latency_ms": latency, "snapshot": snapshot}
        if frame.file is not None:
            event["file"] = frame.file
        if r.diagnostics:
            event["diagnostics"] = finite_or_none(r.diagnostics)
        for sink in self.sinks:  # the broker outbox before the log: a kill between them loses no message
            sink(event)
        self.events.write(event)
        self.capture.done(frame)
        self.live.publish(event, jpg.tobytes())
        self.frames += 1
        if self.show:
            cv2.imshow("edge-foct", overlay)
            cv2.waitKey(1)

    def save(self) -> None:
        try:
            self.store.save(self.session.inspector.method, self.stream, self.frames)
        except OSError as e:
            log.error("saving the state to %s failed (%s); the previous save is kept", self.store.path, e)

    def _refresh(self) -> None:
        c = self.capture
        self.live.update(c.status, dropped=c.dropped, reconnects=c.reconnects, snapshots=self.snapshots.saved,
                         snapshot_errors=self.snapshots.errors, event_errors=self.events.errors)
