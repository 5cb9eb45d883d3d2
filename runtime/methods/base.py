"""What every method implements. A method owns its memory arrays and, if online, its state.

Shapes: K support images, Q patches per image (h*w), D feature dims.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from ..knn import nearest_sq_dist, sq_dists


@dataclass(frozen=True)
class SupportSet:
    """features (K, Q, D) float32; foreground (K, Q) bool or None (no masks); grid (h, w), h*w == Q;
    context: arrays the backbone ships beside its graph (WinCLIP's text embeddings), else empty.
    sources (K,) int: the support image each memory image comes from (runtime/support_augment.py: a
    turned / mirrored copy shares its original's source, the original first; the threshold is learnt
    from the originals, ``originals()``); None: each image is its own source.
    K = 0 (no support image) only for methods with ``zero_shot``."""

    features: np.ndarray
    foreground: np.ndarray | None
    grid: tuple[int, int]
    context: dict[str, np.ndarray] = field(default_factory=dict)
    sources: np.ndarray | None = None

    def __post_init__(self) -> None:
        k, q, _ = self.features.shape
        if self.sources is not None and self.sources.shape != (k,):
            raise ValueError(f"sources {self.sources.shape} does not match features {(k,)}")
        if q != self.grid[0] * self.grid[1]:
            raise ValueError(f"support has {q} patches per image but grid {self.grid}")
        if self.foreground is not None and self.foreground.shape != (k, q):
            raise ValueError(f"foreground {self.foreground.shape} does not match features {(k, q)}")

    def subset(self, keep: list[int]) -> "SupportSet":
        fg = None if self.foreground is None else self.foreground[keep]
        src = None if self.sources is None else self.sources[keep]
        return SupportSet(self.features[keep], fg, self.grid, self.context, src)

    def originals(self) -> "SupportSet":
        """The support as photographed: each source's first memory image (support_augment puts the
        original first), without ``sources``; itself when there are no copies."""
        if self.sources is None:
            return self
        first = np.unique(self.sources, return_index=True)[1]  # (K_sources,)
        keep = sorted(int(i) for i in first)
        fg = None if self.foreground is None else self.foreground[keep]
        return SupportSet(self.features[keep], fg, self.grid, self.context)


@dataclass
class PatchScores:
    """scores (Q,) float32 per patch; diagnostics: JSON-able numbers about this query."""

    scores: np.ndarray
    diagnostics: dict[str, Any] = field(default_factory=dict)


class Method(ABC):
    """A scoring method. ``Params`` is its frozen dataclass of parameters (config.py reads it)."""

    name: ClassVar[str]
    Params: ClassVar[type]
    #: True when ``score(update=True)`` changes the method's memory (the stream calibrates it)
    online: ClassVar[bool] = False
    #: True when ``fit`` uses the support set's foreground masks
    uses_foreground: ClassVar[bool] = False
    #: memory-size ratios (Params fields) that the threshold's leave-one-out fits scale by K / (K - 1),
    #: so a memory of K - 1 images keeps the full memory's row count (runtime/threshold.py)
    loo_matched_capacity: ClassVar[tuple[str, ...]] = ()
    #: True when ``fit`` accepts K = 0 support images (scores from prior knowledge, e.g. text prompts)
    zero_shot: ClassVar[bool] = False
    #: ``SupportSet.context`` keys the method needs from its backbone's side data (WinCLIP: a CLIP graph's)
    needs_context: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def fit(cls, support: SupportSet, params: Any) -> "Method":
        """Build the method's memory from the support set."""

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The memory, as named arrays for the bank file (no pickle)."""

    @classmethod
    @abstractmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: Any) -> "Method":
        """Inverse of ``arrays``."""

    @abstractmethod
    def score(self, features: np.ndarray, *, update: bool = True) -> PatchScores:
        """features (Q, D) float32 -> PatchScores. Online methods learn from it when ``update``."""

    @classmethod
    def flops(cls, m_memory: int, q: int, d: int, params: Any = None) -> float | None:
        """Floating-point operations (a multiply-add counts 2) to score one image of ``q`` patches
        of dimension ``d`` against ``m_memory`` memory rows (semantic + episodic), per-query
        fitting steps included, with ``params`` (None: the defaults); read by `edge-foct bench`.
        None: the method does not state it (the table says so)."""
        return None

    #: the distance GEMMs a method scores with (runtime/knn.py's NumPy ones until ``use_backend``):
    #: (q (n, D), m (k, D)) -> (n, k) squared distances, and -> nearest row's (n,) distance, (n,) index
    _sq: Callable = staticmethod(sq_dists)
    _nearest: Callable = staticmethod(nearest_sq_dist)

    def use_backend(self, backend: Any) -> None:
        """Run the method's maths on ``backend`` (runtime/compute_backend.py ``Backend``), decided once
        at start-up: every method takes its distance GEMMs (``sq_dists``, ``nearest``: on OpenVINO's
        threads beside an OpenVINO engine); methods with GPU kernels extend this for them."""
        self._sq, self._nearest = backend.sq_dists, backend.nearest

    # --- online state (no-ops for offline methods) ---------------------------------------------
    def set_gate(self, threshold: float | None) -> None:
        """Image-score threshold above which a query may not enter the episodic memory."""

    def episodic_state(self) -> dict[str, np.ndarray]:
        """The part of the memory learnt from the stream (saved and restored by the app)."""
        return {}

    def restore_episodic(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of ``episodic_state``."""
