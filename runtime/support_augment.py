"""Support augmentation: quarter turns and mirrors of the support images, added to the memory.

For parts that arrive rotated or mirrored (a plate laid either way up, a screw pointing left or
right), K support images show only K poses; the memory of every method (patchcore, ct, oct, foct,
patchcore+, ...) can hold their turned / mirrored copies too. A spec names generators joined by
``+``; the augmented set is the group they generate, the identity first:

=============  ==  ==========================================================
spec           A   transforms of each support image
=============  ==  ==========================================================
none           1   id
flip           2   id, flip (left-right mirror)
rot180         2   id, rot180
rot180+flip    4   id, rot180, flip, vflip (top-bottom mirror)
rot90          4   id, rot90, rot180, rot270 (counter-clockwise quarter turns)
rot90+flip     8   the 8 symmetries of the square
=============  ==  ==========================================================

K support images become K * A memory images, source-major (image 0's A transforms, then image
1's, ...). The transforms act on the image before the preprocessor: with a square input
(aspect 1: resize to a square, centre crop) they commute with it, so the network sees the turned /
mirrored crop (exactly; a quarter turn to one grey level, OpenCV's resize rounding). A quarter turn does not fit a non-square input (``--keep-aspect``): refused.

- **Foreground masks** (foct): the estimator runs on the K original crops (so a mask judge that
  compares supports compares K different parts, not copies), and each copy gets its source's
  patch-grid mask under the same transform (exact on the grid, which turns like the crop).
- **Threshold** (runtime/threshold.py): learnt from the K originals alone (``SupportSet.sources``
  names each memory image's source, ``originals()`` keeps the first of each), exactly as without
  augmentation: copies are no new parts and say nothing about the support-to-line shift the rule
  models; a larger memory lowers good parts' scores (a nearest neighbour among more images), so
  false alarms should not rise from it.
  Learnt with the copies (a source left out together with them), the threshold fell faster than new
  good parts' scores (2-shot bottle, flip: false alarms 12 -> 34-57 %, benchmarks/README.md).
- The memory grows A-fold (the coreset ratios are kept), and with it the method's time per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import EdgeFoctError
from .methods.base import SupportSet

#: generator name -> (quarter turns, mirror)
GENERATORS: dict[str, tuple[int, bool]] = {"rot90": (1, False), "rot180": (2, False), "flip": (0, True)}
#: specs whose measurements are in benchmarks/results/support_augment (any '+' join of GENERATORS parses)
NAMED = ("none", "flip", "rot180", "rot180+flip", "rot90", "rot90+flip")
DEFAULT = "none"
_NAMES = {(0, False): "id", (1, False): "rot90", (2, False): "rot180", (3, False): "rot270",
          (0, True): "flip", (1, True): "rot90-flip", (2, True): "vflip", (3, True): "rot270-flip"}


@dataclass(frozen=True)
class Transform:
    """``turns`` counter-clockwise quarter turns, then a left-right mirror when ``mirror``."""

    turns: int
    mirror: bool

    @property
    def name(self) -> str:
        return _NAMES[(self.turns, self.mirror)]

    def apply(self, a: np.ndarray) -> np.ndarray:
        """(H, W, ...) array -> the same array turned / mirrored: (W, H, ...) for an odd number of turns."""
        out = np.rot90(a, self.turns, axes=(0, 1))
        return np.ascontiguousarray(out[:, ::-1] if self.mirror else out)

    def then(self, other: "Transform") -> "Transform":
        """This transform followed by ``other`` (a turn after a mirror = the mirror after the opposite turn)."""
        r = self.turns + (-other.turns if self.mirror else other.turns)
        return Transform(r % 4, self.mirror != other.mirror)


IDENTITY = Transform(0, False)


@dataclass(frozen=True)
class SupportAugment:
    """A parsed spec: ``transforms`` (A,) with the identity first."""

    spec: str
    transforms: tuple[Transform, ...]

    def __len__(self) -> int:
        return len(self.transforms)

    @property
    def turns_quarter(self) -> bool:
        return any(t.turns % 2 for t in self.transforms)

    def images(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """K RGB images (H, W, 3) -> K * A images, source-major (the identity is the image itself)."""
        return [img if t == IDENTITY else t.apply(img) for img in images for t in self.transforms]

    def keys(self, paths: Sequence[Any]) -> list[Any]:
        """Cache keys of ``images(paths)``: the path for the identity, ("augment", path, name) else."""
        return [p if t == IDENTITY else ("augment", p, t.name) for p in paths for t in self.transforms]

    def sources(self, k: int) -> np.ndarray:
        """(K * A,) int: the support image each memory image comes from."""
        return np.repeat(np.arange(k), len(self))

    def masks(self, foreground: np.ndarray | None, grid: tuple[int, int]) -> np.ndarray | None:
        """(K, h*w) bool masks of the originals -> (K * A, h*w), each turned like its image (None stays None)."""
        if foreground is None:
            return None
        g = foreground.reshape(-1, *grid)  # (K, h, w)
        return np.stack([t.apply(m).reshape(-1) for m in g for t in self.transforms]) if len(g) else \
            foreground[:0]

    def support_set(self, features: np.ndarray, foreground: np.ndarray | None, grid: tuple[int, int],
                    context: dict[str, np.ndarray] | None = None) -> SupportSet:
        """features (K * A, Q, D) of ``images(...)``, foreground (K, Q) of the originals or None
        -> the SupportSet every method fits on, with its ``sources``."""
        k = features.shape[0] // len(self)
        return SupportSet(features, self.masks(foreground, grid), grid, context or {}, sources=self.sources(k))

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "transforms": [t.name for t in self.transforms]}


def support_augment(spec: str | None, aspect: float = 1.0) -> SupportAugment:
    """Parse a spec (``none``, or generators joined by '+', e.g. ``rot90+flip``) for an input of
    width / height ``aspect``; one line (EdgeFoctError) for an unknown name or a quarter turn of a
    non-square input."""
    spec = DEFAULT if spec is None else spec
    parts = str(spec).strip().lower().split("+")
    bad = [p for p in parts if p not in GENERATORS] if parts != ["none"] else []
    if bad or not isinstance(spec, str):
        raise EdgeFoctError(f"augment {spec!r}: unknown transform {bad[0] if bad else spec!r}; give none or "
                            f"{', '.join(GENERATORS)} joined by + (e.g. rot90+flip)")
    gens = [Transform(*GENERATORS[p]) for p in parts if p != "none"]
    group, frontier = [IDENTITY], [IDENTITY]
    while frontier:  # closure under the generators (at most the 8 symmetries of the square)
        frontier = [t.then(g) for t in frontier for g in gens]
        frontier = [t for t in dict.fromkeys(frontier) if t not in group]
        group += frontier
    aug = SupportAugment("+".join(parts), (IDENTITY, *sorted(group[1:], key=lambda t: (t.mirror, t.turns))))
    if aug.turns_quarter and aspect != 1.0:
        raise EdgeFoctError(f"augment {spec!r}: a quarter turn does not fit a non-square input (aspect {aspect}); "
                            f"use rot180 and/or flip, or a square input (no --keep-aspect)")
    return aug
