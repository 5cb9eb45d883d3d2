"""The CT kernels' packed parameter layout and geometry checks (host side: no GPU, no simulator)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (the `gpu` extra)")

from edge_foct.runtime import navigator as nv  # noqa: E402
from edge_foct.runtime.cuda import ct_step as gpu  # noqa: E402
from edge_foct.runtime.cuda.ct_kernels import CT_TILES, CtTiles  # noqa: E402

from ...conftest import load_benchmark  # noqa: E402


def test_pack_unpack_round_trip_with_zero_padding():
    nav = nv.torch_default_init(10, (70, 33), seed=0)
    lay = gpu.Layout.of(nav, CT_TILES)
    assert (lay.h1p, lay.h2p) == (128, 256)  # 70 units + the cost unit, rounded up to 64-unit chunks
    flat = gpu.pack(nav, lay)
    assert flat.shape == (lay.size,) == (11 * 128 + 128 * 256 + 256 + 1,) and flat.dtype == np.float32
    back = gpu.unpack(flat, lay)
    for k, v in nav.items():
        np.testing.assert_array_equal(back[k], v)
    w1x = flat[:lay.o_w2].reshape(11, 128)
    w2x = flat[lay.o_w2:lay.o_w3].reshape(128, 256)
    np.testing.assert_array_equal(w1x[10, :70], nav["b1"])  # biases ride as the ones row
    np.testing.assert_array_equal(w2x[70, :33], nav["b2"])  # ... and as the cost unit's row of W2x
    assert not w1x[:, 70:].any() and not w2x[71:].any() and not w2x[:, 33:].any()


def test_geometry_limits_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="hidden2 = 300 exceeds the CT kernel's 256"):
        gpu.Layout.of(nv.torch_default_init(4, (8, 300)), CT_TILES)
    with pytest.raises(ValueError, match="pi\\*pj == td\\*r"):
        CtTiles(pi=8, pj=4)
    with pytest.raises(ValueError, match="need \\(M > 0, D\\)"):
        gpu.ct_step(np.zeros((0, 4)), np.zeros((3, 4)), nv.torch_default_init(4, (8, 4)))


def test_executed_flops_are_four_forwards():
    m, q, d, hidden = 400, 1764, 1024, (512, 256)
    assert gpu.step_flops(m, q, d, hidden) == pytest.approx(4 / 3 * nv.flops_per_step(m, q, d, hidden), rel=1e-3)


def test_benchmark_byte_model_uses_the_production_geometry():
    bench = load_benchmark("kernels")
    assert (bench.CT_PAIRS_PER_TILE, bench.CT_UNITS_PER_CHUNK, bench.CT_HIDDEN2_WIDTH) == \
        (CT_TILES.pairs, CT_TILES.hb, CT_TILES.h2p)
    m, q, d, h1, h2 = 400, 1764, 1024, 512, 256
    assert bench.counts("ct_step", (m, q, d, h1, h2))[0] == gpu.step_flops(m, q, d, (h1, h2))
