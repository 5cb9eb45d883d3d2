"""The on-disk outbox of broker messages: bounded, atomic, in order, and it survives a restart.

One file per inspected frame, ``<folder>/<seq:012d>.json``, holding that frame's messages
(``[[topic, payload], ...]``: its event, and its defect when it is one), written with
runtime/atomic.py (temporary file, rename), so a killed process leaves a whole entry or none. The
inference thread ``put``s (a local file write, a fraction of a millisecond; never the network, and
not the disk's fsync, which cost 6-18 ms a file on the test VM); the publisher thread ``sync``s the
entries still unsent after half a second to the disk in batches (a power cut loses at most about a
second; an entry the broker acknowledged in time needs no fsync at all), ``peek``s
the oldest entries and ``remove``s each once the broker acknowledged all its messages. On start the
folder's entries are taken up again in sequence order.

Bounded: at ``max_entries`` the oldest entry is removed to make room (counted in ``overflowed`` and
logged), so a broker that stays away fills at most ``max_entries`` files. An entry that cannot be
read is renamed aside (``<name>.corrupt``), reported, and skipped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

from edge_foct.runtime import atomic

log = logging.getLogger("edge_foct.serve")

SUFFIX = ".json"
Message = tuple[str, str]  # (topic, JSON payload)


class EventQueue:
    def __init__(self, folder: str | Path, max_entries: int = 20000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.folder, self.max_entries = Path(folder), max_entries
        self.folder.mkdir(parents=True, exist_ok=True)
        for tmp in self.folder.glob(".*.tmp"):  # a write that a kill interrupted: never renamed, never an entry
            tmp.unlink(missing_ok=True)
        self._cond = threading.Condition()
        seqs = sorted(int(p.stem) for p in self.folder.glob(f"*{SUFFIX}") if p.stem.isdigit())
        self._pending: deque[int] = deque(seqs)
        self._next = seqs[-1] + 1 if seqs else 0
        self.restored = len(seqs)  # entries left by an earlier run
        self.high_water = len(seqs)
        self.overflowed = 0  # entries removed unsent because the queue was full
        self.corrupt = 0
        self.errors = 0  # failed writes (a full disk): those frames' messages are lost, and counted
        self._unsynced: list[int] = []
        self.closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    def _path(self, seq: int) -> Path:
        return self.folder / f"{seq:012d}{SUFFIX}"

    def put(self, messages: list[Message]) -> bool:
        """Append one frame's messages durably; False (logged, counted) when the disk refuses."""
        data = json.dumps([list(m) for m in messages], separators=(",", ":")).encode()
        with self._cond:
            seq, self._next = self._next, self._next + 1
        try:
            atomic.write_bytes(self._path(seq), data, fsync=False)
        except OSError as e:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.error("broker outbox %s: write failed (%s); %d frames' messages lost so far",
                          self.folder, e, self.errors)
            return False
        with self._cond:
            self._pending.append(seq)
            self._unsynced.append(seq)
            while len(self._pending) > self.max_entries:
                self._drop(self._pending.popleft())
            self.high_water = max(self.high_water, len(self._pending))
            # no notify: a publisher woken here would take the GIL from the inference thread at once
            # (measured: put p50 0.4 -> 6 ms on a loaded 2-core box); it polls (mqtt_publisher.POLL_S)
        return True

    def _drop(self, seq: int) -> None:
        self.overflowed += 1
        if self.overflowed == 1 or self.overflowed % 1000 == 0:
            log.error("broker outbox %s is full (%d frames): the oldest is dropped unsent; %d dropped so far",
                      self.folder, self.max_entries, self.overflowed)
        self._path(seq).unlink(missing_ok=True)

    def peek(self, n: int, after: int = -1, timeout: float = 0.05) -> list[tuple[int, list[Message]]]:
        """Up to ``n`` of the oldest entries with sequence number > ``after``, in order (waits up to
        ``timeout`` for one). Unreadable entries are set aside and skipped."""
        with self._cond:
            if not any(s > after for s in self._pending) and not self.closed:
                self._cond.wait(timeout)
            seqs = [s for s in self._pending if s > after][:n]
        out = []
        for seq in seqs:
            messages = self._read(seq)
            if messages is not None:
                out.append((seq, messages))
        return out

    def _read(self, seq: int) -> list[Message] | None:
        path = self._path(seq)
        try:
            raw = json.loads(path.read_bytes())
            messages = [(str(t), str(p)) for t, p in raw]
        except FileNotFoundError:  # dropped by an overflow meanwhile
            self.remove(seq)
            return None
        except (OSError, ValueError, TypeError) as e:
            self.corrupt += 1
            aside = path.with_name(path.name + ".corrupt")
            try:
                path.replace(aside)
            except OSError:
                pass
            log.error("broker outbox entry %s is unreadable (%s); set aside as %s", path, e, aside.name)
            self.remove(seq)
            return None
        return messages

    def remove(self, seq: int) -> None:
        """The broker has every message of entry ``seq``: forget it."""
        with self._cond:
            try:
                self._pending.remove(seq)
            except ValueError:
                pass
            self._cond.notify_all()
        try:
            self._path(seq).unlink(missing_ok=True)
        except OSError as e:
            log.error("broker outbox: cannot remove %s (%s); it may be sent again after a restart", seq, e)

    @property
    def next_seq(self) -> int:
        with self._cond:
            return self._next

    def sync(self, before: int | None = None) -> int:
        """fsync the entries not yet synced (those numbered below ``before``, when given) and the
        folder; returns how many. Entries the broker acknowledged meanwhile are gone and need none:
        the publisher syncs what is at least one round old, so a broker that keeps up costs no fsync."""
        with self._cond:
            seqs = [s for s in self._unsynced if before is None or s < before]
            self._unsynced = [s for s in self._unsynced if before is not None and s >= before]
        done = 0
        for seq in seqs:
            try:
                fd = os.open(self._path(seq), os.O_RDONLY)
            except FileNotFoundError:  # already sent and removed
                continue
            except OSError as e:
                log.error("broker outbox: cannot sync %s (%s)", self._path(seq), e)
                continue
            try:
                os.fsync(fd)
                done += 1
            except OSError as e:
                log.error("broker outbox: cannot sync %s (%s)", self._path(seq), e)
            finally:
                os.close(fd)
        if seqs:
            try:
                fd = os.open(self.folder, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                log.error("broker outbox: cannot sync the folder %s (%s)", self.folder, e)
        return done

    def wake(self) -> None:
        """Wake a ``peek`` or ``wait_change`` (an acknowledgement arrived, the link came back)."""
        with self._cond:
            self._cond.notify_all()

    def wait_change(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)

    def wait_empty(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending, timeout)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"length": len(self._pending), "high_water": self.high_water, "max": self.max_entries,
                    "overflowed": self.overflowed, "corrupt": self.corrupt, "write_errors": self.errors,
                    "restored": self.restored}
