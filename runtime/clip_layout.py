"""The packed CLIP features of a WinCLIP graph, and the text embeddings stored beside it.

Layout (runtime/names.py, written by export/clip_vit.py): patch_features (N, g, g, D) with, per
patch, [patch token (P) | image embedding (E) | one window embedding (E) per window size]. The side
data (.npz beside the graph) holds the layout, the window sizes and the two sets of
text embeddings (normal and anomalous prompts) computed once at export: no text encoder at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import names
from .errors import BackboneError

def unit_rows(x: np.ndarray) -> np.ndarray:
    """(n, c) -> (n, c) float32 rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


@dataclass(frozen=True)
class ClipFeatures:
    """One image: patches (Q, P), image (E,), windows: one (nw_k, E) array per window size."""

    patches: np.ndarray
    image: np.ndarray
    windows: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class ClipLayout:
    grid: int
    patch_dim: int
    embed_dim: int
    window_sizes: tuple[int, ...]

    @property
    def dim(self) -> int:
        """D of the packed features."""
        return self.patch_dim + self.embed_dim * (1 + len(self.window_sizes))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "ClipLayout":
        missing = [k for k in (names.CLIP_LAYOUT, names.CLIP_WINDOWS) if k not in arrays]
        if missing:
            raise BackboneError(f"no CLIP layout ({missing}): WinCLIP needs a graph from "
                                f"`edge-foct export --what clip` with its side data beside it")
        g, p, e = (int(v) for v in np.asarray(arrays[names.CLIP_LAYOUT]).reshape(-1))
        return cls(g, p, e, tuple(int(k) for k in np.asarray(arrays[names.CLIP_WINDOWS]).reshape(-1)))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {names.CLIP_LAYOUT: np.array([self.grid, self.patch_dim, self.embed_dim], np.int64),
                names.CLIP_WINDOWS: np.array(self.window_sizes, np.int64)}

    def split(self, features: np.ndarray) -> ClipFeatures:
        """features (Q, D) packed -> ClipFeatures, every part scaled to unit rows (cosine geometry)."""
        g, p, e = self.grid, self.patch_dim, self.embed_dim
        if features.shape != (g * g, self.dim):
            raise BackboneError(f"CLIP features of shape {features.shape}, the layout needs {(g * g, self.dim)}: "
                                f"the bank and the graph do not belong together; re-run `edge-foct fit`")
        f = features.reshape(g, g, self.dim)
        windows = []
        for i, k in enumerate(self.window_sizes):
            m, off = g - k + 1, p + e * (1 + i)
            windows.append(unit_rows(f[:m, :m, off:off + e].reshape(m * m, e)))  # (nw, E) row-major
        return ClipFeatures(unit_rows(features[:, :p]), unit_rows(features[0, p:p + e][None])[0], tuple(windows))


def class_text(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(2, E) float32 unit rows [normal, anomalous]: each prompt set averaged (WinCLIP's ensemble)."""
    rows = []
    for key in (names.CLIP_TEXT_NORMAL, names.CLIP_TEXT_ANOMALOUS):
        if key not in arrays:
            raise BackboneError(f"no {key} text embeddings: export the CLIP graph with `edge-foct export --what clip`")
        rows.append(unit_rows(arrays[key]).mean(axis=0))
    return unit_rows(np.stack(rows))
