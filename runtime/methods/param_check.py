"""Types and ranges of method parameters, checked before a Params dataclass is built: a TOML typo
(``coreset_ratio = "abc"``) or a hand-edited manifest (``projection_dim: -3``) is one line
(EdgeFoctError) instead of a TypeError deep in a fit or a silently different memory.

The type is the default's (float fields take ints too); the ranges are by field name below. A
method's own ``__post_init__`` adds the checks that involve several fields.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

#: fractions of the support patches kept in memory: (0, 1]
UNIT_RATIOS = frozenset({"coreset_ratio", "alpha", "beta", "keep_ratio"})
#: fractions that may be 0: [0, 1]
FRACTIONS = frozenset({"min_fg_fraction", "max_fg_fraction"})
#: sizes and counts that must be >= 1 (every other int but ``seed`` must be >= 0)
POSITIVE_INTS = frozenset({"projection_dim", "hidden1", "hidden2", "capacity", "em_iters", "sinkhorn_iters"})


def _fail(method: str, name: str, value: Any, need: str) -> str:
    return f"method {method!r}: {name} = {value!r}; {need}"


def check_params(method: str, params_cls: type, values: dict[str, Any]) -> str | None:
    """The first problem with ``values`` (field -> value) for ``params_cls``, as one line, or None."""
    defaults = {f.name: f.default for f in dataclasses.fields(params_cls)}
    for name, v in values.items():
        d = defaults.get(name, dataclasses.MISSING)
        if isinstance(d, bool):
            if not isinstance(v, bool):
                return _fail(method, name, v, "give true or false")
        elif isinstance(d, int):
            if not isinstance(v, int) or isinstance(v, bool):
                return _fail(method, name, v, "give an integer")
            low = 1 if name in POSITIVE_INTS else (None if name == "seed" else 0)
            if low is not None and v < low:
                return _fail(method, name, v, f"give an integer >= {low}")
        elif isinstance(d, float):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                return _fail(method, name, v, "give a finite number")
            if name in UNIT_RATIOS and not 0 < v <= 1:
                return _fail(method, name, v, "give a fraction in (0, 1]")
            if name in FRACTIONS and not 0 <= v <= 1:
                return _fail(method, name, v, "give a fraction in [0, 1]")
            if v < 0:
                return _fail(method, name, v, "give a number >= 0")
        elif isinstance(d, str) and not isinstance(v, str):
            return _fail(method, name, v, "give a string")
    return None
