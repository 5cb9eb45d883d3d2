"""The live view the dashboard reads: latest overlay (JPEG), recent events, counters. All bounded."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np


class LiveStatus:
    """Written by the inference loop, read by the HTTP threads; every read returns copies."""

    def __init__(self, info: dict[str, Any], history: int = 1000) -> None:
        self._cond = threading.Condition()
        self.info = dict(info)  # fixed at start: source, bank, method, threshold rule, ...
        self._events: deque[dict[str, Any]] = deque(maxlen=history)
        self._jpeg: bytes | None = None
        self._jpeg_event: dict[str, Any] | None = None  # the event of the frame in ``_jpeg``
        self._seq = 0  # counts published frames: MJPEG clients wait for it to move
        self.counters: dict[str, Any] = {"frames": 0, "defects": 0, "dropped": 0, "reconnects": 0,
                                         "snapshots": 0, "snapshot_errors": 0, "event_errors": 0}
        self.source_status = "starting"
        self.threshold = float(info.get("threshold", 0.0))
        self.started = time.time()
        self.closed = False
        self.sections: dict[str, Any] = {}  # name -> callable: more of /api/status ("mqtt")

    def publish(self, event: dict[str, Any], jpeg: bytes) -> None:
        with self._cond:
            self._events.append(event)
            self._jpeg, self._jpeg_event, self._seq = jpeg, event, self._seq + 1
            self.counters["frames"] += 1
            self.counters["defects"] += int(event["defective"])
            self.threshold = event["threshold"]
            self._cond.notify_all()

    def set_warning(self, warning: str | None) -> None:
        """The threshold's one-line warning (unreliable calibration, a drifting stream), shown by the
        dashboard; None clears it."""
        with self._cond:
            self.info["threshold_warning"] = warning

    def update(self, source_status: str, **counters: int) -> None:
        with self._cond:
            self.source_status = source_status
            self.counters.update(counters)

    def close(self) -> None:
        """Wake every MJPEG client so its response ends."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def latest_frame(self) -> tuple[dict[str, Any] | None, bytes | None]:
        """(event, jpeg) of the newest frame, taken together: the verdict and the picture agree."""
        with self._cond:
            return self._jpeg_event, self._jpeg

    def wait_frame(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        """(seq, jpeg) of a frame newer than ``after``, or the current ones after ``timeout``."""
        with self._cond:
            if self._seq <= after and not self.closed:
                self._cond.wait(timeout)
            return self._seq, self._jpeg

    def events(self, after: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Events in frame order: the first ``limit`` with frame id > ``after`` (a client paging
        through the stream), or the newest ``limit`` when ``after`` is None."""
        with self._cond:
            events = list(self._events)
        if limit <= 0:
            return []
        if after is None:
            return events[-limit:]
        return [e for e in events if e["frame"] > after][:limit]

    def status(self) -> dict[str, Any]:
        with self._cond:
            events = list(self._events)
            counters = dict(self.counters)
            src, thr = self.source_status, self.threshold
        lat = np.array([e["latency_ms"]["total"] for e in events], np.float64)
        pct = ({f"p{q}": round(float(np.percentile(lat, q)), 2) for q in (50, 95, 99)} if lat.size
               else {"p50": None, "p95": None, "p99": None})
        fps = None
        if len(events) > 1 and events[-1]["time"] > events[0]["time"]:
            fps = round((len(events) - 1) / (events[-1]["time"] - events[0]["time"]), 2)
        return {**self.info, "threshold": thr, "source_status": src, "counters": counters,
                "latest": events[-1] if events else None, "latency_ms": pct, "fps": fps,
                "trend": [[e["frame"], e["score"], e["defective"]] for e in events[-200:]],
                "uptime_s": round(time.time() - self.started, 1), **{k: f() for k, f in self.sections.items()}}
