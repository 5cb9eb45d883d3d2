"""Option types and help shared by the commands: every numeric option is checked where click parses
it (a bad value is one ``Error: Invalid value for '--X'`` line, never a traceback or a silent
substitute), and ``--method`` / ``--preset`` list what exists, one line each.
"""

from __future__ import annotations

import click

from edge_foct.runtime.config import MAX_SIZE, MIN_SIZE
from edge_foct.runtime.methods import METHODS

#: one line per method, shown by ``--help`` (a method missing here gets its class name: tests catch it)
METHOD_LINES = {
    "patchcore": "nearest memory patch over a greedy coreset; offline, fastest (the default)",
    "patchcore+": "PatchCore with the prototypes refined per query by Sinkhorn EM (seed 001); offline",
    "vanilla": "FOCT's linear-metric ablation: closed-form ridge reconstruction; offline",
    "ct": "conditional transport against the support memory; offline",
    "oct": "ct + an episodic memory learnt online from the stream",
    "foct": "oct + a foreground-aware memory (the full FOCT method)",
    "winclip": "CLIP window scores: zero-shot from text prompts (--shots 0), few-shot from a visual memory (seed 001)",
    "winclip+": "WinCLIP with the CLIP prototypes refined per query by Sinkhorn EM (seed 001)",
}

PORT = click.IntRange(0, 65535)
POSITIVE_INT = click.IntRange(min=1)
NON_NEGATIVE_INT = click.IntRange(min=0)
POSITIVE_FLOAT = click.FloatRange(min=0.0, min_open=True)


class InputSize(click.ParamType):
    """The network input: resize = crop = SIZE, a multiple of 16 (the stride-8 and stride-16 grids line
    up) within [MIN_SIZE, MAX_SIZE]."""

    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            v = value
        else:
            try:
                v = int(str(value), 10)
            except ValueError:
                self.fail(f"{value!r} is not an integer", param, ctx)
        if v % 16 or not MIN_SIZE <= v <= MAX_SIZE:
            self.fail(f"{v}: give a multiple of 16 from {MIN_SIZE} to {MAX_SIZE} (e.g. 256 or 336)", param, ctx)
        return v


INPUT_SIZE = InputSize()
METHOD = click.Choice(sorted(METHODS))


def presets_line() -> str:
    """'ct, oct, foct: edge | paper' for each group of methods sharing presets."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, cls in sorted(METHODS.items()):
        presets = tuple(sorted(getattr(cls, "PRESETS", {})))
        if presets:
            groups.setdefault(presets, []).append(name)
    return "; ".join(f"{', '.join(names)}: {' | '.join(p)}" for p, names in groups.items()) or "none"


def methods_epilog() -> str:
    """The methods, one line each, and their presets (``\\b`` keeps click from re-wrapping them)."""
    width = max(map(len, METHODS))
    lines = [f"  {name:<{width}}  {METHOD_LINES.get(name, cls.__name__)}" for name, cls in sorted(METHODS.items())]
    return "\b\nMethods (--method):\n" + "\n".join(lines) + f"\n\n\b\nPresets (--preset): {presets_line()}"


PRESET_HELP = "Method preset (" + presets_line() + ")."


class MultiValueCommand(click.Command):
    """Lets ``--shots 1 2 4`` and ``--shots 1,2,4`` stand for ``--shots 1 --shots 2 --shots 4``
    (for the options declared with multiple=True)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        multi = {o for p in self.params if isinstance(p, click.Option) and p.multiple for o in p.opts}
        out, current = [], None
        for a in args:
            if a.startswith("-"):
                current = a if a in multi else None
                out.append(a)
            elif current is None:
                out.append(a)
            else:
                for v in filter(None, a.split(",")):
                    if out[-1] != current:
                        out.append(current)  # a further value of the same option
                    out.append(v)
        return super().parse_args(ctx, out)
