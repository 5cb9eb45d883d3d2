"""What the runtime reads from a bank's manifest.json, checked on load: its sha256 and its values.

``bank.npz`` has always been hashed; the manifest holds as much of the bank's meaning (the
threshold, the input size and patch grid, the method and its parameters, the backbone's identity),
so ``fit`` writes ``manifest_sha256`` too: the sha256 of the manifest's canonical JSON (sorted keys,
no spaces) without that key. A hand-edited manifest is refused (``--threshold`` overrides the
threshold without an edit). Each value is also checked for type and range, so a bank written
before manifests were hashed (accepted, with a warning) cannot feed a NaN threshold, a grid that
does not match the crop or a negative projection size to the runtime either.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from .config import check_input_size, is_number
from .errors import BankError, EdgeFoctError
from .methods import make_params
from .preprocess import Preprocessor

log = logging.getLogger(__name__)

DIGEST_KEY = "manifest_sha256"
REFIT = "re-run `edge-foct fit`"


def manifest_digest(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_manifest(manifest: dict[str, Any], where: str) -> None:
    """BankError (one line) unless the manifest is the one fit wrote and its values are usable."""
    digest = manifest.get(DIGEST_KEY)
    if digest is None:
        log.warning("%s: written before manifests were hashed: its values are checked, but an edit cannot be "
                    "told apart (%s to hash it)", where, REFIT)
    elif digest != manifest_digest(manifest):
        raise BankError(f"{where}: edited after fit (its sha256 does not match the one fit wrote); {REFIT}, "
                        f"or pass --threshold to change the threshold without editing the bank")
    try:
        _check_values(manifest)
    except (KeyError, TypeError, AttributeError) as e:
        raise BankError(f"{where}: missing or malformed entry ({type(e).__name__}: {e}); {REFIT}") from None
    except EdgeFoctError as e:
        raise BankError(f"{where}: {e}; {REFIT}") from None


def _check_values(m: dict[str, Any]) -> None:
    t = m["threshold"]
    if not is_number(t["value"]):
        raise EdgeFoctError(f"threshold value {t['value']!r} is not a finite number")
    for k in ("floor", "ceiling"):
        if t.get(k) is not None and not is_number(t[k]):
            raise EdgeFoctError(f"threshold {k} {t[k]!r} is not a finite number")
    if not isinstance(t["rule"], str):
        raise EdgeFoctError(f"threshold rule {t['rule']!r} is not a string")
    resize, crop, aspect = m["input"]["resize"], m["input"]["crop"], m["input"].get("aspect", 1.0)
    check_input_size(resize, crop, "input")
    if not is_number(aspect) or not 0.25 <= aspect <= 4.0:
        raise EdgeFoctError(f"input aspect {aspect!r} is not a number in [0.25, 4]")
    stride = m["input"].get("stride", 8)
    if stride not in (8, 16):
        raise EdgeFoctError(f"input stride {stride!r} must be 8 or 16")
    grid = list(Preprocessor(resize, crop, float(aspect), stride=stride).grid)
    if list(m["grid"]) != grid:
        raise EdgeFoctError(f"grid {m['grid']} does not match the input (crop {crop}, aspect {aspect}: grid {grid})")
    b = m["backbone"]
    if not (isinstance(b["sha256"], str) and len(b["sha256"]) == 64):
        raise EdgeFoctError(f"backbone sha256 {b['sha256']!r} is not a sha256")
    if not isinstance(b["feature_dim"], int) or isinstance(b["feature_dim"], bool) or b["feature_dim"] < 1:
        raise EdgeFoctError(f"backbone feature_dim {b['feature_dim']!r} is not a positive integer")
    if not isinstance(m["method"]["params"], dict):
        raise EdgeFoctError(f"method params {m['method']['params']!r} are not a table")
    make_params(m["method"]["name"], m["method"]["params"])  # name, types and ranges (EdgeFoctError)
