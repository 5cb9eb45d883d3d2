"""Frame sources and the capture thread.

A source opens, reads RGB frames and closes. ``live`` sources (a camera, an RTSP stream) may drop
out: the capture thread reconnects with exponential back-off. A file source ends; a folder source
waits for new files. The capture thread fills a bounded queue: for a live source the oldest frame
is dropped when inference falls behind (and counted); a lossless source (a file read as fast as
inference goes) blocks instead, so every frame is inspected.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge_foct.runtime.errors import EdgeFoctError, ImageError
from edge_foct.runtime.image_io import IMAGE_SUFFIXES, read_image

log = logging.getLogger("edge_foct.serve")


class SourceError(EdgeFoctError):
    """A camera, file, stream or folder that cannot be opened."""


class Source(Protocol):
    name: str
    live: bool  # may drop out and come back: reconnect instead of ending

    def open(self) -> None: ...
    def read(self) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB, or None when the source has ended or dropped out."""
    def close(self) -> None: ...


class CaptureSource:
    """OpenCV VideoCapture: a camera index (V4L2), a video file or an RTSP URL."""

    def __init__(self, target: int | str, kind: str, fps: float | None = None, loop: bool = False) -> None:
        self.target, self.kind, self.loop = target, kind, loop
        self.name = f"{kind}:{target}"
        self.live = kind in ("camera", "rtsp")
        self.period = 1.0 / fps if fps else 0.0  # files: pace like a camera when set
        self._cap: cv2.VideoCapture | None = None
        self._next = 0.0

    def open(self) -> None:
        if self.kind == "camera":
            cap = cv2.VideoCapture(int(self.target), cv2.CAP_V4L2)
            if not cap.isOpened():
                raise SourceError(f"camera {self.target} cannot be opened (no /dev/video{self.target} or it "
                                  f"is busy); list cameras with `ls /dev/video*` and pass --camera N")
        elif self.kind == "video":
            if not Path(self.target).is_file():
                raise SourceError(f"--video {self.target}: file not found")
            cap = cv2.VideoCapture(str(self.target))
            if not cap.isOpened():
                raise SourceError(f"--video {self.target}: OpenCV cannot decode it; convert it to MP4/AVI")
        else:
            # bounded waits: a stream that stalls is treated as dropped (and reconnected) after 5 s
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000])
            if not cap.isOpened():
                raise SourceError(f"--rtsp {self.target}: cannot connect; check the URL and that the "
                                  f"camera is reachable")
        self._cap = cap

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        if self.period:
            delay = self._next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next = max(self._next, time.monotonic() - self.period) + self.period
        ok, bgr = self._cap.read()
        if not ok and self.kind == "video" and self.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderSource:
    """Image files of a folder in name order, then new files as they arrive (polled)."""

    live = False

    def __init__(self, folder: str | Path, poll_s: float = 0.2, stop: threading.Event | None = None) -> None:
        self.folder = Path(folder)
        self.name = f"folder:{folder}"
        self.poll_s = poll_s
        self._stop = stop or threading.Event()
        self._seen: set[str] = set()
        self._pending: deque[Path] = deque()
        self._tries: dict[Path, int] = {}

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"--folder {self.folder}: not a folder")

    def read(self) -> np.ndarray | None:
        while not self._stop.is_set():
            if not self._pending:
                new = sorted(p for p in self.folder.iterdir()
                             if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in self._seen)
                self._pending.extend(new)
                self._seen.update(p.name for p in new)
            if not self._pending:
                self._stop.wait(self.poll_s)
                continue
            path = self._pending.popleft()
            try:
                return read_image(path)
            except ImageError as e:
                # a file still being written does not decode yet: retry a few polls later
                self._tries[path] = self._tries.get(path, 0) + 1
                if self._tries[path] < 5:
                    self._pending.append(path)
                    self._stop.wait(self.poll_s)
                else:
                    log.error("%s; skipped", e)
        return None

    def close(self) -> None:
        pass


@dataclass
class Frame:
    id: int
    time: float  # epoch seconds at capture
    rgb: np.ndarray  # (H, W, 3) uint8


class CaptureThread(threading.Thread):
    """Reads ``source`` into a bounded queue; reconnects live sources with back-off."""

    def __init__(self, source: Source, queue_size: int = 2, lossless: bool = False,
                 backoff: tuple[float, float] = (0.5, 8.0), first_id: int = 0) -> None:
        super().__init__(name="capture", daemon=True)
        self.source, self.lossless, self.backoff = source, lossless, backoff
        self._queue: deque[Frame] = deque()
        self._size = max(1, queue_size)
        self._cond = threading.Condition()
        self.stop_event = threading.Event()
        self.ended = False  # the source has no more frames (a file or folder source that was stopped)
        self.dropped = 0
        self.reconnects = 0
        self.status = "starting"
        self._next_id = first_id

    def run(self) -> None:
        delay = self.backoff[0]
        try:
            while not self.stop_event.is_set():
                rgb = self.source.read()
                if rgb is not None:
                    self.status, delay = "running", self.backoff[0]
                    self._put(Frame(self._next_id, time.time(), rgb))
                    self._next_id += 1
                    continue
                if not self.source.live:
                    break
                self.status = "reconnecting"
                self.source.close()
                while not self.stop_event.is_set():
                    log.warning("%s dropped out; reconnecting in %.1f s", self.source.name, delay)
                    if self.stop_event.wait(delay):
                        break
                    delay = min(2 * delay, self.backoff[1])
                    try:
                        self.source.open()
                    except SourceError as e:
                        log.warning("%s", e)
                        continue
                    self.reconnects += 1
                    log.info("%s reconnected", self.source.name)
                    break
        finally:
            self.source.close()
            with self._cond:
                self.ended, self.status = True, "ended"
                self._cond.notify_all()

    def _put(self, frame: Frame) -> None:
        with self._cond:
            if self.lossless:
                while len(self._queue) >= self._size and not self.stop_event.is_set():
                    self._cond.wait(0.1)
            elif len(self._queue) >= self._size:
                self._queue.popleft()  # inference is behind: the oldest frame is the least useful
                self.dropped += 1
            self._queue.append(frame)
            self._cond.notify_all()

    def get(self, timeout: float = 0.5) -> Frame | None:
        """The oldest queued frame, or None after ``timeout`` (check ``finished`` then)."""
        with self._cond:
            if not self._queue and not self.ended:
                self._cond.wait(timeout)
            if not self._queue:
                return None
            frame = self._queue.popleft()
            self._cond.notify_all()
            return frame

    @property
    def finished(self) -> bool:
        """The source ended and every queued frame was taken."""
        with self._cond:
            return self.ended and not self._queue

    def stop(self) -> None:
        self.stop_event.set()
        with self._cond:
            self._cond.notify_all()
