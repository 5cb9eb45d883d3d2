"""What the loop leaves on disk: the JSON-lines event log and snapshots of defective frames.

Neither may stop the inspection: a failed write (a full disk, a removed folder) is logged (the
first time and then every 100th), counted, and serving goes on.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_foct.runtime import atomic

log = logging.getLogger("edge_foct.serve")


class EventLog:
    """Appends one JSON object per line; each line is whole or absent.

    Each line goes out in one ``os.write`` of the whole line on an O_APPEND descriptor; a write that
    fails or is short (a full disk) is cut back to the size before it (``ftruncate``), so a
    fragment never stays for the next line or the next run to be glued onto. On open, a trailing
    fragment an older run left (a kill mid-write, a disk that filled up before this fix) is cut at
    the last newline and reported. ``errors`` counts the events lost in this run, ``repaired`` the
    fragment cut on open (0 or 1).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self.errors = 0
        self.repaired = self._repair()

    def _repair(self) -> int:
        """Cut a trailing partial line (no final newline) back to the last newline; 1 if one was cut."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return 0
        with open(self.path, "rb") as f:
            pos = size
            while pos > 0:
                step = min(65536, pos)
                f.seek(pos - step)
                block = f.read(step)
                if pos == size and block.endswith(b"\n"):
                    return 0
                nl = block.rfind(b"\n")
                if nl >= 0:
                    pos = pos - step + nl + 1
                    break
                pos -= step
        os.ftruncate(self._fd, pos)
        log.warning("event log %s: cut a partial last line (%d bytes) left by an earlier run (a full disk or "
                    "a kill mid-write): 1 event of that run lost", self.path, size - pos)
        return 1

    def write(self, event: dict[str, Any]) -> None:
        line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        try:
            before = os.fstat(self._fd).st_size
        except OSError as e:
            self._lost(e)
            return
        try:
            n = os.write(self._fd, line)
            if n != len(line):
                raise OSError(errno.ENOSPC, f"short write ({n} of {len(line)} bytes)")
        except OSError as e:
            try:
                os.ftruncate(self._fd, before)  # the line is absent, not half there
            except OSError as e2:
                log.error("event log %s: cannot cut a partial line (%s); the next start cuts it", self.path, e2)
            self._lost(e)

    def _lost(self, e: OSError) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 100 == 0:
            log.error("event log %s: write failed (%s); %d events lost so far", self.path,
                      e.strerror or e, self.errors)

    def close(self) -> None:
        if self.errors:
            log.error("event log %s: %d events of this run were lost (not written)", self.path, self.errors)
        try:
            os.close(self._fd)
        except OSError as e:
            log.error("event log %s: close failed (%s)", self.path, e)


#: a snapshot pair's stem: <run (UTC, sortable)>-<frame id, 7 digits>
SNAPSHOT_STEM = re.compile(r"^(\d{8}T\d{6}Z)-(\d{7,})_(frame\.png|overlay\.jpg)$")


class Snapshots:
    """``<folder>/<run>-<frame>_frame.png`` and ``_overlay.jpg`` per defective frame; the newest
    ``keep`` pairs in the folder are kept, counting earlier runs' (so the folder stays bounded over
    restarts, not just within one run). ``keep`` 0 writes none."""

    def __init__(self, folder: str | Path, run: str, keep: int = 500,
                 write: Callable[[Path, bytes], None] = atomic.write_bytes) -> None:
        if keep < 0:
            raise ValueError(f"keep = {keep}: need >= 0")
        self.folder, self.run, self.keep = Path(folder), run, keep
        self._write = write  # injectable: the tests simulate a full disk with it
        self._kept: deque[tuple[Path, Path]] = deque(self._earlier())
        self.saved = 0
        self.errors = 0
        self._trim()

    def _earlier(self) -> list[tuple[Path, Path]]:
        """Earlier runs' pairs in the folder, oldest first (run ids are UTC times, frame ids 7 digits)."""
        if not self.folder.is_dir():
            return []
        stems = set()
        for p in self.folder.iterdir():
            m = SNAPSHOT_STEM.match(p.name)
            if m:
                stems.add((m.group(1), int(m.group(2))))
        return [(self.folder / f"{r}-{f:07d}_frame.png", self.folder / f"{r}-{f:07d}_overlay.jpg")
                for r, f in sorted(stems)]

    def _trim(self) -> None:
        while len(self._kept) > self.keep:
            for p in self._kept.popleft():
                try:
                    p.unlink(missing_ok=True)
                except OSError as e:
                    log.error("snapshot %s: cannot remove (%s)", p, e)

    def save(self, frame_id: int, frame_png: bytes, overlay_jpg: bytes) -> str | None:
        """Write both files; returns the overlay path relative to the output folder, or None."""
        if self.keep == 0:
            return None
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
        self._trim()
        return f"{self.folder.name}/{overlay_path.name}"
