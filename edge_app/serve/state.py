"""What the stream taught, saved and restored: the method's episodic memory + the threshold window.

One ``.npz`` (no pickle), written atomically (runtime/atomic.py), so a kill at any moment leaves
the previous file or the new one. Keys: ``episodic.<name>`` (the method's ``episodic_state()``),
``stream.<name>`` (``StreamThreshold.state()``), ``meta.bank`` (sha256 of the bank's arrays) and
``meta.method``. A file that cannot be read, or belongs to another bank, is reported, renamed
aside (``<name>.corrupt-<UTC time>``) and never used: the app starts with an empty state.
"""

from __future__ import annotations

import datetime as dt
import logging
import zipfile
from pathlib import Path

import numpy as np

from edge_foct.runtime import atomic
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.methods import Method
from edge_foct.runtime.threshold import StreamThreshold

log = logging.getLogger("edge_foct.serve")


class StateStore:
    def __init__(self, path: str | Path, bank_id: str, method_name: str) -> None:
        self.path = Path(path)
        self.bank_id, self.method_name = bank_id, method_name
        self.saves = 0

    def save(self, method: Method, stream: StreamThreshold | None, frames: int) -> None:
        arrays = {f"episodic.{k}": v for k, v in method.episodic_state().items()}
        if stream is not None:
            arrays.update({f"stream.{k}": v for k, v in stream.state().items()})
        arrays.update({"meta.bank": np.array(self.bank_id), "meta.method": np.array(self.method_name),
                       "meta.frames": np.array(frames, np.int64)})
        atomic.write_npz(self.path, arrays)
        self.saves += 1

    def restore(self, method: Method, stream: StreamThreshold | None) -> str:
        """Load the saved state into ``method`` and ``stream``; returns one line saying what happened."""
        if not self.path.exists():
            return f"no saved state at {self.path}: starting empty"
        try:
            with np.load(self.path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}  # reading every member checks its CRC
            if str(arrays.get("meta.bank")) != self.bank_id or str(arrays.get("meta.method")) != self.method_name:
                raise ValueError(f"it belongs to bank {str(arrays.get('meta.bank'))[:12]} / method "
                                 f"{arrays.get('meta.method')}, not {self.bank_id[:12]} / {self.method_name}")
            for k, v in arrays.items():
                if v.dtype.kind == "f" and not np.isfinite(v).all():
                    raise ValueError(f"array {k} has non-finite values")
            method.restore_episodic({k[9:]: v for k, v in arrays.items() if k.startswith("episodic.")})
            if stream is not None:
                stream.restore({k[7:]: v for k, v in arrays.items() if k.startswith("stream.")})
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, EdgeFoctError) as e:
            aside = self.set_aside()
            # the method may hold half a restore: the caller rebuilds it from the bank
            raise CorruptState(f"saved state {self.path} is unusable ({e}); moved to {aside}, starting empty") from None
        episodic = sum(int(v.shape[0]) for k, v in arrays.items() if k.startswith("episodic.") and v.ndim)
        return (f"restored {self.path} (saved after {int(arrays['meta.frames'])} frames; "
                f"{episodic} episodic rows, {stream.accepted if stream else 0} stream scores)")

    def set_aside(self) -> Path:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        self.path.replace(aside)
        return aside


class CorruptState(Exception):
    """The saved state was set aside; the message says where. Not an error: serving goes on."""
