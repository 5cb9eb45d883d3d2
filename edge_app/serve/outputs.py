"""What the loop leaves on disk: the JSON-lines event log and snapshots of defective frames.

Neither may stop the inspection: a failed write (a full disk, a removed folder) is logged (the
first time and then every 100th), counted, and serving goes on.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_foct.runtime import atomic

log = logging.getLogger("edge_foct.serve")


class EventLog:
    """Appends one JSON object per line and flushes it, so a kill loses at most the line in flight."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        self.errors = 0

    def write(self, event: dict[str, Any]) -> None:
        try:
            self._f.write(json.dumps(event, separators=(",", ":")) + "\n")
            self._f.flush()
        except OSError as e:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.error("event log %s: write failed (%s); %d events lost so far", self.path, e, self.errors)

    def close(self) -> None:
        try:
            self._f.close()
        except OSError as e:
            log.error("event log %s: close failed (%s)", self.path, e)


class Snapshots:
    """``<folder>/<run>-<frame>_frame.png`` and ``_overlay.jpg`` per defective frame; the newest
    ``keep`` pairs are kept, so the folder stays bounded on a long run."""

    def __init__(self, folder: str | Path, run: str, keep: int = 500,
                 write: Callable[[Path, bytes], None] = atomic.write_bytes) -> None:
        self.folder, self.run, self.keep = Path(folder), run, keep
        self._write = write  # injectable: the tests simulate a full disk with it
        self._kept: deque[tuple[Path, Path]] = deque()
        self.saved = 0
        self.errors = 0

    def save(self, frame_id: int, frame_png: bytes, overlay_jpg: bytes) -> str | None:
        """Write both files; returns the overlay path relative to the output folder, or None."""
        stem = f"{self.run}-{frame_id:07d}"
        frame_path, overlay_path = self.folder / f"{stem}_frame.png", self.folder / f"{stem}_overlay.jpg"
        try:
            self._write(frame_path, frame_png)
            self._write(overlay_path, overlay_jpg)
        except OSError as e:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.error("snapshot %s: write failed (%s); %d snapshots lost so far, inspection goes on",
                          stem, e, self.errors)
            return None
        self.saved += 1
        self._kept.append((frame_path, overlay_path))
        while len(self._kept) > self.keep:
            for p in self._kept.popleft():
                try:
                    p.unlink(missing_ok=True)
                except OSError as e:
                    log.error("snapshot %s: cannot remove (%s)", p, e)
        return f"{self.folder.name}/{overlay_path.name}"
