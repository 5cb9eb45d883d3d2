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


class Budget(click.ParamType):
    """A rate: ``5%`` or ``0.05``, strictly between 0 and 1."""

    name = "rate"

    def convert(self, value, param, ctx):  # noqa: ANN001
        if isinstance(value, float):
            v = value
        else:
            text = str(value).strip()
            try:
                v = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
            except ValueError:
                self.fail(f"{value!r} is not a rate (give e.g. 5% or 0.05)", param, ctx)
        if not (math.isfinite(v) and 0.0 < v < 1.0):
            self.fail(f"{value!r} must be between 0 and 100% (e.g. 5%)", param, ctx)
        return v


BUDGET = Budget()
