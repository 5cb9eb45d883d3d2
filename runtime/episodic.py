"""Online episodic memory (FOCT sec. 4.2): query patches the transport matched best, kept in a
foreground and a background part, compressed by coreset when full, guarded by the threshold.

Selection (DESIGN.md 2.2): for every memory row its best query patch by the transport map;
de-duplicate by query index (the row with the highest probability wins and gives its fg/bg
label); keep the top ``k_fg`` patches reached from foreground rows and the top ``k_bg`` from
background rows, by that probability. When the memory has no rows of one part (no masks, or
``oct``), that part's quota goes to the other.

Guard (not in the paper; a defect must never become "normal" memory). ``gate`` is the
image-level verdict threshold (Method.set_gate; in serve never above the learnt one,
StreamThreshold.gate). Image level: an image whose score is above
``image_ratio * gate`` admits nothing (at ratio 1: every image reported defective). Patch level:
a candidate whose own score is above ``patch_ratio * gate`` is refused, so the anomalous patches
of a missed defect stay out too. No gate (None) admits every candidate, as the paper does.
"""

from __future__ import annotations

import numpy as np

from . import names
from .coreset import coreset_size, greedy_coreset
from .errors import BankError


def best_queries(tmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Transport map (M, Q) -> per memory row the best query index (M,) and its probability (M,)."""
    j = tmap.argmax(axis=1)
    return j, tmap[np.arange(tmap.shape[0]), j]


def admissible(patch_scores: np.ndarray, gate: float | None, patch_ratio: float = 1.0,
               image_ratio: float = 1.0) -> np.ndarray:
    """(Q,) bool: which query patches the guard lets into the memory (see module docstring)."""
    if gate is None:
        return np.ones(patch_scores.shape, bool)
    if float(patch_scores.max()) > image_ratio * gate:
        return np.zeros(patch_scores.shape, bool)
    return patch_scores <= patch_ratio * gate


def select_candidates(best_query: np.ndarray, best_prob: np.ndarray, row_fg: np.ndarray,
                      k_fg: int, k_bg: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per memory row (M,): best query index, its probability, fg label; allowed (Q,) bool.
    -> query indices to admit to the foreground part and to the background part."""
    if not row_fg.any():
        k_fg, k_bg = 0, k_fg + k_bg
    elif row_fg.all():
        k_fg, k_bg = k_fg + k_bg, 0
    order = np.argsort(-best_prob, kind="stable")  # rows by probability, highest first
    q_sorted = best_query[order]
    _, first = np.unique(q_sorted, return_index=True)  # first (best) row reaching each query
    winners = order[np.sort(first)]  # de-duplicated rows, still by decreasing probability
    winners = winners[allowed[best_query[winners]]]
    fg_rows = winners[row_fg[winners]][:k_fg]
    bg_rows = winners[~row_fg[winners]][:k_bg]
    return best_query[fg_rows], best_query[bg_rows]


class EpisodicMemory:
    """fg (n_fg, D) and bg (n_bg, D) patches learnt from the stream; ``capacity`` L rows in all.

    When an update takes it past L, each part is reduced to ``keep_ratio`` of its rows by the
    greedy k-center coreset (the paper's min-max facility location, after a random projection).
    """

    def __init__(self, dim: int, capacity: int = 100, keep_ratio: float = 0.25,
                 projection_dim: int = 128, seed: int = 0) -> None:
        self.capacity, self.keep_ratio = capacity, keep_ratio
        self.projection_dim, self.seed = projection_dim, seed
        self.fg = np.zeros((0, dim), np.float32)
        self.bg = np.zeros((0, dim), np.float32)

    def __len__(self) -> int:
        return self.fg.shape[0] + self.bg.shape[0]

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """-> features (n_fg + n_bg, D), is_foreground (n_fg + n_bg,) bool."""
        return (np.concatenate([self.fg, self.bg]),
                np.r_[np.ones(len(self.fg), bool), np.zeros(len(self.bg), bool)])

    def add(self, fg: np.ndarray, bg: np.ndarray) -> None:
        """Append fg (a, D) and bg (b, D) patches, then compress if over capacity."""
        self.fg = np.concatenate([self.fg, fg.astype(np.float32)])
        self.bg = np.concatenate([self.bg, bg.astype(np.float32)])
        if len(self) > self.capacity:
            self.fg, self.bg = self._compress(self.fg), self._compress(self.bg)

    def _compress(self, x: np.ndarray) -> np.ndarray:
        n = coreset_size(x.shape[0], self.keep_ratio)
        return x[np.sort(greedy_coreset(x, n, self.projection_dim, seed=self.seed))]

    def state(self) -> dict[str, np.ndarray]:
        return {"episodic_fg": self.fg.copy(), "episodic_bg": self.bg.copy()}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        fg, bg = arrays["episodic_fg"], arrays["episodic_bg"]
        if fg.shape[1:] != self.fg.shape[1:] or bg.shape[1:] != self.bg.shape[1:]:
            raise BankError(f"episodic state of feature dim {fg.shape[1:]} does not fit this bank's dim "
                            f"{self.fg.shape[1:]}; delete the saved {names.EPISODIC_STATE} to restart the stream")
        self.fg, self.bg = fg.astype(np.float32), bg.astype(np.float32)
