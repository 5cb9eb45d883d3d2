"""Acknowledged defects, kept on the server (OUT/acknowledged.json) so every operator's browser, a
reload and a restart of `serve` on the same OUT agree on what is still to look at.

A defect is named by its run id (UTC start time of the serve run, as the events carry it) and its
frame id: ``"<run>-<frame>"``. The file is rewritten atomically (runtime/atomic.py) on every
acknowledgement and holds the newest ``MAX_KEPT`` names; a damaged file is reported in one line and
started afresh (its acknowledgements are lost, never a defect).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

from edge_foct.runtime import atomic

log = logging.getLogger("edge_foct.serve")

FILE_NAME = "acknowledged.json"
MAX_KEPT = 5000
RUN_ID = re.compile(r"\d{8}T\d{6}Z")  # serve's run ids (app.py: UTC, sortable)


def ack_name(run: str, frame: int) -> str:
    return f"{run}-{int(frame)}"


class Acknowledgements:
    """The acknowledged defect names of one OUT folder; thread-safe (the dashboard's threads)."""

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / FILE_NAME
        self._lock = threading.Lock()
        self._names: dict[str, None] = {}  # insertion-ordered set
        try:
            data = json.loads(self.path.read_text())
            names = data["acknowledged"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("'acknowledged' is not a list of names")
            self._names = dict.fromkeys(names[-MAX_KEPT:])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("acknowledgements %s unreadable (%s): starting with none acknowledged", self.path, e)

    def add(self, run: str, frame: int) -> int:
        """Acknowledge one defect (idempotent) and persist; returns the number kept."""
        with self._lock:
            self._names[ack_name(run, frame)] = None
            while len(self._names) > MAX_KEPT:
                del self._names[next(iter(self._names))]
            atomic.write_json(self.path, {"acknowledged": list(self._names)})
            return len(self._names)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._names)

    def __len__(self) -> int:
        with self._lock:
            return len(self._names)


def earlier_defects(events_log: str | Path, acks: Acknowledgements, run: str, limit: int = 200,
                    tail_bytes: int = 4 << 20) -> list[dict]:
    """The newest ``limit`` defective events of earlier runs in OUT's event log that nobody has
    acknowledged (a restart of `serve` keeps them on the dashboard's list). Reads at most the last
    ``tail_bytes`` of the log; a line that is not an event is skipped."""
    path = Path(events_log)
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            lines = f.read().splitlines()[1 if size > tail_bytes else 0:]
    except OSError:
        return []
    done = set(acks.names())
    out = []
    for line in reversed(lines):
        try:
            e = json.loads(line)
            if (e.get("defective") is True and e.get("run") != run and isinstance(e.get("run"), str)
                    and ack_name(e["run"], e["frame"]) not in done):
                out.append(e)
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        if len(out) >= limit:
            break
    return out[::-1]
