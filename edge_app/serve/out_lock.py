"""One ``serve`` per output folder: an exclusive ``fcntl`` lock on ``<out>/serve.lock``.

Two processes appending to one events.jsonl, trimming one snapshots/ folder and saving one
episodic.npz would interleave and undo each other. The lock is the kernel's (``flock``): it goes
with the process, so a killed serve never leaves a stale lock behind; the file holds the holder's
pid, for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edge_foct.runtime.errors import EdgeFoctError

from edge_foct.edge_app.out_dir import ensure_writable

LOCK_NAME = "serve.lock"


class OutLock:
    def __init__(self, out: str | os.PathLike) -> None:
        self.path = ensure_writable(out, create=True) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "OutLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EdgeFoctError(f"--out {self.path.parent} is in use by another edge-foct serve (pid {holder}); "
                                f"stop it or pass another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
