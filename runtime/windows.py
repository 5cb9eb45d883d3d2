"""WinCLIP's windows over the patch grid and the harmonic aggregation of window scores to patches.

A window of size k is a k x k block of patches at stride 1 that lies fully inside the (g, g) grid:
(g - k + 1)^2 windows, listed row-major by their top-left patch (the order export/clip_vit.py packs
their embeddings in). A patch's score at one scale is the harmonic mean of the scores of the
windows that cover it (WinCLIP, Jeong et al. 2023; anomalib's ``harmonic_aggregation``): a patch
looks normal as soon as one window around it does, which localises a defect to the windows that
contain it. A window score of 0 makes the patch's score 0.
"""

from __future__ import annotations

import numpy as np


def window_index(grid: int, k: int) -> np.ndarray:
    """(nw, k*k) int64: row-major patch indices of every k x k window, nw = (grid - k + 1)^2."""
    if not 1 <= k <= grid:
        raise ValueError(f"window size {k} must be between 1 and the grid size {grid}")
    m = grid - k + 1
    top, left = np.divmod(np.arange(m * m), m)  # (nw,) top-left patch of each window
    dr, dc = np.divmod(np.arange(k * k), k)  # (k*k,) offsets inside a window
    return ((top[:, None] + dr[None, :]) * grid + left[:, None] + dc[None, :]).astype(np.int64)


def token_index(grid: int, k: int) -> np.ndarray:
    """(nw, 1 + k*k) int64: the ViT tokens of each window, class token (0) first, patch p is token p + 1."""
    idx = window_index(grid, k) + 1
    return np.concatenate([np.zeros((idx.shape[0], 1), np.int64), idx], axis=1)


def harmonic_aggregate(window_scores: np.ndarray, grid: int, k: int) -> np.ndarray:
    """window_scores (nw,) > = 0 -> (grid*grid,) float32: per patch, the harmonic mean of the scores
    of the windows covering it (0 when one of them is 0)."""
    idx = window_index(grid, k)  # (nw, k*k)
    s = np.asarray(window_scores, np.float64)
    if s.shape != (idx.shape[0],):
        raise ValueError(f"{s.shape[0] if s.ndim else 0} window scores for {idx.shape[0]} windows of size {k}")
    with np.errstate(divide="ignore"):
        inv = 1.0 / s  # (nw,), inf where a score is 0
    q = grid * grid
    count = np.bincount(idx.ravel(), minlength=q)  # (Q,) windows covering each patch
    total = np.bincount(idx.ravel(), weights=np.repeat(inv, k * k), minlength=q)  # (Q,) sum of 1/s
    with np.errstate(divide="ignore"):
        return (count / total).astype(np.float32)  # count / inf = 0
