"""Atomic writes: a reader sees the old file or the new one, never half of either.

Files get the mode an ordinary ``open(path, "w")`` would (0666 less the umask), not the 0600 of
the temporary file they are written through.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status); elsewhere set and
    restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, then rename.

    ``fsync=False`` keeps the rename (a killed process leaves the old file or the new one) but not
    the wait for the disk (a few ms, up to tens under load): for callers that sync in batches later
    (the serve broker outbox, event_queue.py)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Save arrays uncompressed (fast to load) without pickle, atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())
