from __future__ import annotations

import numpy as np
import pytest

from edge_foct.runtime.coreset import coreset_size, greedy_coreset, random_projection
from edge_foct.runtime.knn import nearest_sq_dist


@pytest.mark.parametrize("n,m,d,block", [(1, 1, 3, 7), (37, 11, 5, 8), (100, 64, 33, 2048)])
def test_nearest_matches_brute_force(n, m, d, block, rng):
    q = rng.standard_normal((n, d)).astype(np.float32)
    mem = rng.standard_normal((m, d)).astype(np.float32)
    brute = ((q[:, None, :] - mem[None]) ** 2).sum(-1)
    dist, idx = nearest_sq_dist(q, mem, block=block)
    np.testing.assert_allclose(dist, brute.min(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(idx, brute.argmin(1))


def test_coreset_covers_better_than_random(rng):
    # clusters of very different sizes: k-center must visit every cluster
    centres = rng.standard_normal((8, 16)) * 20
    x = np.concatenate([c + rng.standard_normal((s, 16)) for c, s in zip(centres, [400, 5, 5, 5, 5, 5, 5, 5])])
    x = x.astype(np.float32)
    idx = greedy_coreset(x, 16, proj_dim=8)
    assert len(set(idx.tolist())) == 16
    cover = nearest_sq_dist(x, x[idx])[0].max()
    rand = nearest_sq_dist(x, x[rng.choice(len(x), 16, replace=False)])[0].max()
    assert cover < rand
    np.testing.assert_array_equal(idx, greedy_coreset(x, 16, proj_dim=8))  # deterministic


def test_coreset_edge_sizes(rng):
    x = rng.standard_normal((10, 4)).astype(np.float32)
    assert len(greedy_coreset(x, 50)) == 10
    assert len(greedy_coreset(x, 0)) == 0
    assert coreset_size(1000, 0.1) == 100 and coreset_size(3, 0.01) == 1 and coreset_size(0, 0.5) == 0


def test_random_projection_is_cached_and_read_only():
    a, b = random_projection(64, 16, seed=3), random_projection(64, 16, seed=3)
    assert a is b and a.shape == (64, 16) and a.dtype == np.float32
    assert random_projection(64, 16, seed=4) is not a
    with pytest.raises(ValueError):
        a[0, 0] = 1.0
