"""Output folders, checked before any work: writable (a read-only filesystem fails in one line at
start, not after minutes of compute), and not silently reused (a bank is replaced only with
``--force``; a predict folder's maps from an earlier run are removed, not left beside new ones).
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from pathlib import Path

from edge_foct.runtime import names
from edge_foct.runtime.errors import EdgeFoctError

log = logging.getLogger("edge_foct")


def ensure_writable(folder: str | os.PathLike, flag: str = "--out", create: bool = False) -> Path:
    """Check that ``folder`` can be written, with a probe file created and removed in it, or in its
    nearest existing parent when it does not exist yet (nothing is left behind: a command that fails
    later writes nothing); ``create`` makes the folder too. One line (EdgeFoctError) when it cannot."""
    folder = Path(folder)
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        probe_in = folder.absolute()
        while not probe_in.exists() and probe_in != probe_in.parent:
            probe_in = probe_in.parent
        if not probe_in.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", str(probe_in))
        fd, probe = tempfile.mkstemp(prefix=".edge-foct-probe.", dir=probe_in)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        why = {errno.EROFS: "read-only filesystem", errno.EACCES: "permission denied",
               errno.EPERM: "not permitted", errno.ENOSPC: "no space left",
               errno.ENOTDIR: "a file is in the way", errno.EEXIST: "a file is in the way"}.get(
            e.errno, e.strerror or str(e))
        raise EdgeFoctError(f"{flag} {folder}: cannot write there ({why}); pass a writable folder") from None
    return folder


def refuse_existing_bank(folder: str | os.PathLike, force: bool) -> None:
    """A bank folder that already holds a bank is replaced only when ``force``."""
    folder = Path(folder)
    held = [n for n in (names.BANK_MANIFEST, names.BANK_ARRAYS) if (folder / n).exists()]
    if held and not force:
        raise EdgeFoctError(f"--out {folder} already holds a bank ({', '.join(held)}); pass --force to replace "
                            f"it, or another --out")


def clear_predict_outputs(out: str | os.PathLike) -> int:
    """Remove the maps and overlays an earlier predict left in ``out`` (PNG files in maps/ and
    overlays/, and results.jsonl), so the folder holds this run's results only. Returns how many."""
    out = Path(out)
    removed = 0
    for sub in ("maps", "overlays"):
        if (out / sub).is_dir():
            for p in (out / sub).glob("*.png"):
                p.unlink()
                removed += 1
    if (out / "results.jsonl").exists():
        (out / "results.jsonl").unlink()
        removed += 1
    if removed:
        log.info("%s: removed %d files of an earlier predict run", out, removed)
    return removed
