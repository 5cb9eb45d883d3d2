"""WinCLIP's windows and harmonic aggregation against direct loops."""

from __future__ import annotations

import numpy as np
import pytest

from edge_foct.runtime.windows import harmonic_aggregate, token_index, window_index


def _windows_loop(grid: int, k: int) -> list[list[int]]:
    return [[(r + i) * grid + c + j for i in range(k) for j in range(k)]
            for r in range(grid - k + 1) for c in range(grid - k + 1)]


def _harmonic_loop(scores: np.ndarray, grid: int, k: int) -> np.ndarray:
    """Per patch: windows whose k x k block contains it, found by their bounds; harmonic mean."""
    out = np.zeros(grid * grid)
    m = grid - k + 1
    for p in range(grid * grid):
        pr, pc = divmod(p, grid)
        covering = [scores[r * m + c] for r in range(m) for c in range(m) if r <= pr < r + k and c <= pc < c + k]
        out[p] = 0.0 if min(covering) == 0 else len(covering) / sum(1.0 / s for s in covering)
    return out


@pytest.mark.parametrize("grid,k", [(15, 2), (15, 3), (4, 2), (5, 5), (3, 1), (7, 4)])
def test_window_index_is_every_inside_block_row_major(grid, k):
    idx = window_index(grid, k)
    assert idx.tolist() == _windows_loop(grid, k)
    tok = token_index(grid, k)
    assert (tok[:, 0] == 0).all() and (tok[:, 1:] == idx + 1).all()


@pytest.mark.parametrize("grid,k", [(15, 2), (15, 3), (4, 2), (5, 5), (3, 1), (7, 4)])
def test_harmonic_aggregation_matches_a_direct_loop(grid, k, rng):
    scores = rng.uniform(0.01, 1.0, (grid - k + 1) ** 2)
    got = harmonic_aggregate(scores, grid, k)
    assert got.shape == (grid * grid,) and got.dtype == np.float32
    np.testing.assert_allclose(got, _harmonic_loop(scores, grid, k), rtol=1e-6)


def test_harmonic_aggregation_properties(rng):
    grid, k = 6, 3
    s = rng.uniform(0.1, 1.0, 16)
    got = harmonic_aggregate(s, grid, k)
    # between the smallest and the largest covering score; a constant stays that constant
    assert (got >= s.min() - 1e-6).all() and (got <= s.max() + 1e-6).all()
    np.testing.assert_allclose(harmonic_aggregate(np.full(16, 0.3), grid, k), 0.3, rtol=1e-6)
    # a zero window makes exactly the patches it covers zero
    s[0] = 0.0
    z = harmonic_aggregate(s, grid, k).reshape(grid, grid)
    assert (z[:3, :3] == 0).all() and (np.delete(z.ravel(), [r * grid + c for r in range(3) for c in range(3)]) > 0).all()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="window size"):
        window_index(4, 5)
    with pytest.raises(ValueError, match="window scores"):
        harmonic_aggregate(np.ones(3), 4, 2)
