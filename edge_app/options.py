"""Click parameter types shared by the commands."""

from __future__ import annotations

import math

import click


class FiniteFloat(click.ParamType):
    """A float that is a real number: ``nan``, ``inf`` are refused with one line (a threshold of
    NaN or inf would pass every part)."""

    name = "number"

    def convert(self, value, param, ctx):  # noqa: ANN001 (click's signature)
        if isinstance(value, float) and math.isfinite(value):
            return value
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number (a NaN or infinite threshold would pass every part)",
                      param, ctx)
        return v


FINITE = FiniteFloat()
