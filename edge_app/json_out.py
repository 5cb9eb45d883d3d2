"""JSON for every output a user or a parser reads (results.jsonl, events.jsonl, the dashboard API).

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which no strict parser (a browser's
``JSON.parse``, jq) accepts. Here a float that is not finite becomes ``null``, and the encoder runs
with ``allow_nan=False`` so a missed one fails loudly instead of writing invalid JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def finite_or_none(x: Any) -> Any:
    """Recursively: a non-finite float -> None; NumPy scalars -> Python numbers; the rest as is."""
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_none(v) for v in x]
    return x


def dumps(obj: Any, **kw: Any) -> str:
    """``json.dumps`` of ``finite_or_none(obj)``; never writes NaN or Infinity."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **kw)
