"""The memory bank on disk: ``bank.npz`` (arrays, no pickle) + ``manifest.json``.

The manifest records the format version, the backbone (id, sha256, feature dim, pretrained),
the input size, the patch grid, the method and its parameters, the threshold, the support
images and the resolved config. It is written last, with the sha256 of ``bank.npz``, so a
half-written bank is refused rather than half-used, and with its own sha256 and checked values
(runtime/bank_check.py), so a hand-edited one is refused rather than used silently.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import atomic, names
from .backbone import BackboneInfo
from .bank_check import DIGEST_KEY, check_manifest, manifest_digest
from .errors import BankError, EdgeFoctError
from .methods import Method, make_params, method_class


@dataclass
class Bank:
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def method_name(self) -> str:
        return self.manifest["method"]["name"]

    @property
    def threshold(self) -> float:
        """The learnt (or fixed) threshold; a manifest value that is not a finite number is refused."""
        from .threshold import finite_threshold

        try:
            return finite_threshold(self.manifest["threshold"]["value"], "bank manifest threshold")
        except EdgeFoctError as e:
            raise BankError(f"{e}; re-run `edge-foct fit`") from None

    @property
    def input_size(self) -> tuple[int, int]:
        """(resize, crop)."""
        return self.manifest["input"]["resize"], self.manifest["input"]["crop"]

    @property
    def input_aspect(self) -> float:
        """Width / height of the network input (1.0: square; banks before --keep-aspect are square)."""
        return float(self.manifest["input"].get("aspect", 1.0))

    @property
    def pretrained(self) -> bool:
        return bool(self.manifest["backbone"]["pretrained"])

    def make_method(self, overrides: dict[str, Any] | None = None) -> Method:
        """The bank's method, with its stored parameters (optionally overridden)."""
        m = self.manifest["method"]
        params = make_params(m["name"], {**m["params"], **(overrides or {})})
        return method_class(m["name"]).from_arrays(self.arrays, params)

    def check_backbone(self, info: BackboneInfo) -> None:
        """Refuse features from any backbone but the one the bank was fitted with."""
        b = self.manifest["backbone"]
        if b["sha256"] != info.sha256:
            raise BankError(
                f"this bank was fitted with backbone {b['id']} (sha256 {b['sha256'][:12]}), but "
                f"{info.path} is {info.backbone_id} (sha256 {info.sha256[:12]}); re-run "
                f"`edge-foct fit --backbone {info.path} ...` to make a bank for it")

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        buf = io.BytesIO()
        np.savez(buf, **self.arrays)
        data = buf.getvalue()
        atomic.write_bytes(folder / names.BANK_ARRAYS, data)
        manifest = {k: v for k, v in self.manifest.items() if k != DIGEST_KEY}
        manifest.update(format_version=names.BANK_FORMAT_VERSION, arrays_sha256=hashlib.sha256(data).hexdigest())
        manifest = json.loads(json.dumps(manifest))  # as it will read back (tuples -> lists), then hashed
        manifest[DIGEST_KEY] = manifest_digest(manifest)
        atomic.write_json(folder / names.BANK_MANIFEST, manifest)
        self.manifest = manifest
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Bank":
        folder = Path(folder)
        mpath, apath = folder / names.BANK_MANIFEST, folder / names.BANK_ARRAYS
        if not mpath.is_file() or not apath.is_file():
            raise BankError(f"{folder}: not a bank (needs {names.BANK_MANIFEST} and {names.BANK_ARRAYS}); "
                            f"make one with `edge-foct fit`")
        try:
            manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BankError(f"{mpath}: corrupt manifest ({e}); re-run `edge-foct fit`") from None
        if not isinstance(manifest, dict):
            raise BankError(f"{mpath}: corrupt manifest (not a JSON object); re-run `edge-foct fit`")
        version = manifest.get("format_version")
        if version != names.BANK_FORMAT_VERSION:
            raise BankError(f"{folder}: bank format {version}, this edge-foct reads format "
                            f"{names.BANK_FORMAT_VERSION}; re-run `edge-foct fit` to rebuild it")
        check_manifest(manifest, str(mpath))
        data = apath.read_bytes()
        if hashlib.sha256(data).hexdigest() != manifest.get("arrays_sha256"):
            raise BankError(f"{apath}: contents do not match the manifest (corrupt or replaced); "
                            f"re-run `edge-foct fit`")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, zipfile.BadZipFile, OSError) as e:
            raise BankError(f"{apath}: unreadable ({e}); re-run `edge-foct fit`") from None
        return cls(manifest, arrays)
