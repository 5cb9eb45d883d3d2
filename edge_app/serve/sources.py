"""Frame sources and the capture thread.

A source opens, reads RGB frames and closes. ``live`` sources (a camera, an RTSP stream) may drop
out: the capture thread reconnects with exponential back-off. A file source ends; a folder source
waits for new files. The capture thread fills a bounded queue: for a live source the oldest frame
is dropped when inference falls behind (and counted); a lossless source (a file read as fast as
inference goes) blocks instead, so every frame is inspected.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge_foct.runtime import atomic
from edge_foct.runtime.errors import EdgeFoctError, ImageError
from edge_foct.runtime.image_io import IMAGE_SUFFIXES, read_image

log = logging.getLogger("edge_foct.serve")

FOLDER_STATE = "folder_seen.json"  # in --out: the files a --folder source has inspected


class SourceError(EdgeFoctError):
    """A camera, file, stream or folder that cannot be opened. ``retry``: it may come up later (a
    camera that is busy, an RTSP stream that is down), so a live source is retried with back-off
    at start-up as after a drop-out; otherwise (no such device, file or folder) serving stops."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


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
            if not Path(f"/dev/video{self.target}").exists():
                raise SourceError(f"camera {self.target} cannot be opened (no /dev/video{self.target}); list "
                                  f"cameras with `ls /dev/video*` and pass --camera N")
            cap = cv2.VideoCapture(int(self.target), cv2.CAP_V4L2)
            if not cap.isOpened():
                raise SourceError(f"camera {self.target} cannot be opened (/dev/video{self.target} is busy or "
                                  f"not a capture device)", retry=True)
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
                                  f"camera is reachable", retry=True)
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
    """Image files of a folder in name order, then new files as they arrive (polled).

    ``current`` names the file of the frame last read (the event log records it). With ``state`` (a
    JSON file in --out), the files inspected are remembered across restarts, each by name, size and
    modification time (a file replaced under the same name is inspected again): ``done(name)``,
    called once the file's event is written, saves the record atomically.
    """

    live = False

    def __init__(self, folder: str | Path, poll_s: float = 0.2, stop: threading.Event | None = None,
                 state: str | Path | None = None) -> None:
        self.folder = Path(folder)
        self.name = f"folder:{folder}"
        self.poll_s = poll_s
        self.state = Path(state) if state is not None else None
        self.current: str | None = None
        self._stop = stop or threading.Event()
        self._queued: set[str] = set()
        self._done: dict[str, list[int]] = {}  # name -> [size, mtime_ns] of the version inspected
        self._pending: deque[Path] = deque()
        self._tries: dict[Path, int] = {}

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"--folder {self.folder}: not a folder")
        self._done = self._load_state()
        if self._done:
            log.info("%s: %d files inspected by an earlier run are skipped (%s)", self.name, len(self._done),
                     self.state)

    @staticmethod
    def _stat(path: Path) -> list[int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]

    def _load_state(self) -> dict[str, list[int]]:
        if self.state is None or not self.state.exists():
            return {}
        try:
            data = json.loads(self.state.read_text())
            if data.get("folder") != str(self.folder.resolve()):
                log.warning("%s holds another folder's record (%s): starting afresh", self.state, data.get("folder"))
                return {}
            files = {str(k): [int(v[0]), int(v[1])] for k, v in dict(data["files"]).items()}
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            log.error("%s is unreadable (%s): every file of the folder is inspected again", self.state, e)
            return {}
        # forget files no longer in the folder, so the record stays as small as the folder
        return {n: v for n, v in files.items() if (self.folder / n).exists()}

    def done(self, name: str) -> None:
        """Record ``name`` (a file of this folder) as inspected, atomically."""
        stat = self._stat(self.folder / name)
        if self.state is None or stat is None:
            return
        self._done[name] = stat
        try:
            atomic.write_json(self.state, {"folder": str(self.folder.resolve()), "files": self._done})
        except OSError as e:
            log.error("%s: cannot save the record of inspected files (%s)", self.state, e)

    def _is_new(self, p: Path) -> bool:
        if p.suffix.lower() not in IMAGE_SUFFIXES or p.name in self._queued:
            return False
        seen = self._done.get(p.name)
        return seen is None or seen != self._stat(p)

    def read(self) -> np.ndarray | None:
        while not self._stop.is_set():
            if not self._pending:
                new = sorted(p for p in self.folder.iterdir() if self._is_new(p))
                self._pending.extend(new)
                self._queued.update(p.name for p in new)
            if not self._pending:
                self._stop.wait(self.poll_s)
                continue
            path = self._pending.popleft()
            try:
                rgb = read_image(path)
            except ImageError as e:
                # a file still being written does not decode yet: retry a few polls later
                self._tries[path] = self._tries.get(path, 0) + 1
                if self._tries[path] < 5:
                    self._pending.append(path)
                    self._stop.wait(self.poll_s)
                else:
                    log.error("%s; skipped", e)
                    self.done(path.name)  # not retried at every restart either
                continue
            self.current = path.name
            return rgb
        return None

    def close(self) -> None:
        pass


@dataclass
class Frame:
    id: int
    time: float  # epoch seconds at capture
    rgb: np.ndarray  # (H, W, 3) uint8
    file: str | None = None  # a folder source: the file's name


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
                    self._put(Frame(self._next_id, time.time(), rgb, getattr(self.source, "current", None)))
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

    def done(self, frame: Frame) -> None:
        """The frame's event is written: a folder source records its file as inspected."""
        if frame.file is not None and hasattr(self.source, "done"):
            self.source.done(frame.file)

    def stop(self) -> None:
        self.stop_event.set()
        with self._cond:
            self._cond.notify_all()
