"""PatchCore aggregation of two feature taps into patch features (NumPy reference).

The exported backbone graphs do the same inside the graph (export/aggregation.py); this module is
the reference they are tested against, and the maths both read:

    f8  (N, C8, h, w)        stride-8 tap          ->  3x3 average (stride 1, pad 1, zeros counted)
    f16 (N, C16, h/2, w/2)   stride-16 tap         ->  3x3 average, bilinear x2 (half-pixel)
    each tap's channels      adaptive-avg-pooled to ``layer_dim`` (official PatchCore: 1024)
    the two stacked          adaptive-avg-pooled to ``out_dim``   (official PatchCore: 1024)
    -> (N, h, w, out_dim)

``layer_dim=None`` keeps the taps' own widths and concatenates them (out_dim = C8 + C16), which
is what small backbones want (pooling 128 channels up to 1024 only repeats them).
"""

from __future__ import annotations

import numpy as np


def adaptive_pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_in, n_out) float32 matrix P with x @ P == torch.nn.functional.adaptive_avg_pool1d(x, n_out)."""
    p = np.zeros((n_in, n_out), np.float32)
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -((-(i + 1) * n_in) // n_out)  # ceil
        p[start:end, i] = 1.0 / (end - start)
    return p


def channel_matrix(c8: int, c16: int, layer_dim: int | None, out_dim: int | None) -> np.ndarray:
    """(c8 + c16, D) matrix of the whole channel reduction; identity when both dims are None."""
    if layer_dim is None:
        return np.eye(c8 + c16, dtype=np.float32)
    block = np.zeros((c8 + c16, 2 * layer_dim), np.float32)
    block[:c8, :layer_dim] = adaptive_pool_matrix(c8, layer_dim)
    block[c8:, layer_dim:] = adaptive_pool_matrix(c16, layer_dim)
    # official PatchCore stacks the two layers as (2, layer_dim) and flattens it row-major
    return block @ adaptive_pool_matrix(2 * layer_dim, out_dim or layer_dim)


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) interpolation matrix, half-pixel centres (torch align_corners=False)."""
    r = np.zeros((n_out, n_in), np.float32)
    scale = n_in / n_out
    for o in range(n_out):
        x = max((o + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(np.floor(x)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        t = x - i0
        r[o, i0] += 1.0 - t
        r[o, i1] += t
    return r


def avg3x3(x: np.ndarray) -> np.ndarray:
    """(N, C, h, w) -> (N, C, h, w): 3x3 mean, stride 1, zero padding counted (torch default)."""
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, w = x.shape[2:]
    return sum(p[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def aggregate(f8: np.ndarray, f16: np.ndarray, layer_dim: int | None = 1024,
              out_dim: int | None = 1024) -> np.ndarray:
    """(N, C8, h, w), (N, C16, h', w') -> (N, h, w, D) float32 patch features."""
    a8 = avg3x3(f8.astype(np.float32))
    a16 = avg3x3(f16.astype(np.float32))
    h, w = a8.shape[2:]
    ry, rx = bilinear_matrix(a16.shape[2], h), bilinear_matrix(a16.shape[3], w)
    up16 = np.einsum("yi,ncij,xj->ncyx", ry, a16, rx)  # (N, C16, h, w)
    stacked = np.concatenate([a8, up16], axis=1).transpose(0, 2, 3, 1)  # (N, h, w, C8 + C16)
    return (stacked @ channel_matrix(f8.shape[1], f16.shape[1], layer_dim, out_dim)).astype(np.float32)
