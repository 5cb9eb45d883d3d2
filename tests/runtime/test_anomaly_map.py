from __future__ import annotations

import numpy as np
import pytest

from edge_foct.runtime.anomaly_map import anomaly_map, image_score


def test_map_matches_torch_upsample_and_scipy_blur(rng):
    torch = pytest.importorskip("torch", reason="torch checks the reference upsampling")
    ndimage = pytest.importorskip("scipy.ndimage")
    p = rng.random((32, 32)).astype(np.float32)
    up = torch.nn.functional.interpolate(torch.from_numpy(p)[None, None], size=(256, 256), mode="bilinear",
                                         align_corners=False)[0, 0].numpy()
    ref = ndimage.gaussian_filter(up, sigma=4)
    np.testing.assert_allclose(anomaly_map(p, (256, 256)), ref, atol=2e-4)


def test_image_score_is_max(rng):
    p = rng.random((8, 8))
    assert image_score(p) == pytest.approx(p.max())
