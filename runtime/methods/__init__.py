"""Method registry: the one place that maps a method name to its class.

A new method is one module here and one line in ``METHODS``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import EdgeFoctError
from .base import Method, PatchScores, SupportSet
from .param_check import check_params
from .foct import CT, FOCT, OCT
from .patchcore import PatchCore
from .patchcore_plus import PatchCorePlus
from .vanilla import Vanilla
from .winclip import WinClip, WinClipPlus

METHODS: dict[str, type[Method]] = {
    PatchCore.name: PatchCore,
    PatchCorePlus.name: PatchCorePlus,
    Vanilla.name: Vanilla,
    CT.name: CT,
    OCT.name: OCT,
    FOCT.name: FOCT,
    WinClip.name: WinClip,
    WinClipPlus.name: WinClipPlus,
}


def method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise EdgeFoctError(f"unknown method {name!r}; choose one of {sorted(METHODS)}") from None


def make_params(name: str, overrides: dict[str, Any] | None = None, preset: str | None = None) -> Any:
    """The method's frozen Params: its defaults, then the preset's, then ``overrides``.

    A method with presets exposes ``PRESETS: dict[str, dict]`` on its class.
    """
    cls = method_class(name)
    values: dict[str, Any] = {}
    presets: dict[str, dict] = getattr(cls, "PRESETS", {})
    if preset is not None:
        if preset not in presets:
            raise EdgeFoctError(f"method {name!r} has no preset {preset!r}; presets: {sorted(presets) or 'none'}")
        values.update(presets[preset])
    values.update(overrides or {})
    known = {f.name for f in dataclasses.fields(cls.Params)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise EdgeFoctError(f"method {name!r} has no parameter(s) {unknown}; known: {sorted(known)}")
    problem = check_params(name, cls.Params, values)
    if problem:
        raise EdgeFoctError(problem)
    return cls.Params(**values)


__all__ = ["METHODS", "Method", "PatchScores", "SupportSet", "make_params", "method_class"]
