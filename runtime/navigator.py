"""The CT navigator d(x, y) = MLP((x - y)^2), forward and hand-written backward, without ever
building the (M, Q, D) tensor of squared differences.

Layout (the contract's .npz keys, ``x @ W``): W1 (D, H1), b1 (H1,), W2 (H1, H2), b2 (H2,),
W3 (H2, 1), b3 (1,); LeakyReLU(0.01) after layers 1 and 2:

    D_ij = lrelu(lrelu((x_i - y_j)^2 @ W1 + b1) @ W2 + b2) @ W3 + b3

The first layer expands (DESIGN.md section 5):
    (x - y)^2 @ W1 = x^2 @ W1 + y^2 @ W1 - 2 (x * y) @ W1,
and the cross term of hidden unit k is x diag(W1[:, k]) y^T: for a block of hidden units one GEMM
(M*Hb, D) @ (D, Qb). The W1 gradient expands the same way. Work is blocked over query patches
(and hidden units) so temporaries stay under ``BLOCK_FLOATS``.

Cost per AdamW step (M memory rows, Q query patches): forward 2*M*Q*(D*H1 + H1*H2 + H2) FLOPs,
backward about twice that (dW1's cross GEMM, dA1 and dW2), so ~3x forward per step (4x here when
the activations are too big to keep and backward recomputes them); with M ~ 400, Q = 1764,
D = 1024, H = 512-256 that is ~2.8e12 per step, ~5.5e14 for the authors' 2 fits x 100 steps.
"""

from __future__ import annotations

import numpy as np

SLOPE = 0.01  # torch.nn.LeakyReLU default
BLOCK_FLOATS = 1 << 23  # ~32 MB of float32 per temporary
CACHE_FLOATS = 1 << 26  # forward keeps its activations for backward when they fit in ~256 MB
Params = dict[str, np.ndarray]


def torch_default_init(dim: int, hidden: tuple[int, int], seed: int | list[int] = 0) -> Params:
    """torch.nn.Linear's default init (kaiming_uniform a=sqrt(5) -> U(+-1/sqrt(fan_in)), same
    bound for the bias): the distribution the authors' reset_parameters() draws from per query.
    ``seed``: anything numpy.random.default_rng takes."""
    rng = np.random.default_rng(seed)
    sizes = (dim, *hidden, 1)
    p: Params = {}
    for n, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        bound = 1.0 / np.sqrt(fan_in)
        p[f"W{n}"] = rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)
        p[f"b{n}"] = rng.uniform(-bound, bound, (fan_out,)).astype(np.float32)
    return p


def soft_nn_init(dim: int, hidden: tuple[int, int], tau: float) -> Params:
    """A navigator with D = C / tau exactly (C = ||x - y||^2): hidden unit 0 of each layer carries
    sum((x - y)^2) / tau >= 0 through the positive side of both LeakyReLUs; every other weight is 0.
    Step 0 of the CT fit is then a soft nearest neighbour at temperature tau."""
    h1, h2 = hidden
    p = {"W1": np.zeros((dim, h1), np.float32), "b1": np.zeros(h1, np.float32),
         "W2": np.zeros((h1, h2), np.float32), "b2": np.zeros(h2, np.float32),
         "W3": np.zeros((h2, 1), np.float32), "b3": np.zeros(1, np.float32)}
    p["W1"][:, 0] = 1.0 / tau
    p["W2"][0, 0] = 1.0
    p["W3"][0, 0] = 1.0
    return p


def _lrelu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, SLOPE * z)  # = LeakyReLU for 0 < SLOPE < 1


def _times_lrelu_grad(g: np.ndarray, z: np.ndarray) -> np.ndarray:
    """g * LeakyReLU'(z), in place on g."""
    np.multiply(g, SLOPE, out=g, where=z <= 0)
    return g


def _blocks(m: int, q: int, width: int) -> tuple[range, int]:
    """Query-block starts so that a (width, Qb, M) temporary stays under BLOCK_FLOATS."""
    qb = max(1, min(q, BLOCK_FLOATS // max(1, m * width)))
    return range(0, q, qb), qb


def _hidden_block(qb: int, d: int, h1: int) -> int:
    """Hidden units per cross-term GEMM so its (Hb*Qb, D) operand stays under BLOCK_FLOATS."""
    return max(1, min(h1, BLOCK_FLOATS // max(1, qb * d)))


# Activations are laid out (hidden, Qb, M) so every layer is one 2-D GEMM over the Qb*M pairs
# (NumPy's stacked matmul falls back to slow loops; 2-D GEMMs go to BLAS). The cross term scales
# the query side, W1[:, k] * y_j, so that elementwise work is H1*Q*D in all, whatever the blocks.

def _layer1(p: Params, x: np.ndarray, y: np.ndarray, x2w: np.ndarray) -> np.ndarray:
    """Pre-activation of layer 1 for all pairs of x (M, D) and a query block y (Qb, D)
    -> (H1, Qb, M), by the expansion; x2w = x^2 @ W1 (M, H1) is shared across blocks."""
    w1 = p["W1"]
    qb, d = y.shape
    h1 = w1.shape[1]
    z = ((y * y) @ w1 + p["b1"]).T[:, :, None] + x2w.T[:, None, :]  # (H1, Qb, M)
    hb = _hidden_block(qb, d, h1)
    for k in range(0, h1, hb):
        ks = slice(k, k + hb)
        a = (w1[:, ks].T[:, None, :] * y[None]).reshape(-1, d)  # (Hb*Qb, D): W1[:, k] * y_j
        z[ks] -= 2.0 * (a @ x.T).reshape(-1, qb, x.shape[0])  # cross term (Hb, Qb, M)
    return z


def _forward_block(p: Params, x, y, x2w):
    """-> z1 (H1, Qb, M), z2 (H2, Qb, M), D block (M, Qb)."""
    z1 = _layer1(p, x, y, x2w)
    h1, qb, m = z1.shape
    z2 = (p["W2"].T @ _lrelu(z1).reshape(h1, -1) + p["b2"][:, None]).reshape(-1, qb, m)
    dist = (p["W3"].T @ _lrelu(z2).reshape(z2.shape[0], -1)).reshape(qb, m).T + p["b3"][0]
    return z1, z2, dist


def forward(p: Params, x: np.ndarray, y: np.ndarray, keep: bool = False) -> tuple[np.ndarray, list | None]:
    """x (M, D) memory, y (Q, D) query patches -> D (M, Q) navigator distances, and (when
    ``keep`` and they fit in CACHE_FLOATS) the activations per query block for ``backward``."""
    m, q = x.shape[0], y.shape[0]
    h1, h2 = p["W2"].shape
    x2w = (x * x) @ p["W1"]
    out = np.empty((m, q), x.dtype)
    cache = [] if keep and m * q * (h1 + h2) <= CACHE_FLOATS else None
    starts, qb = _blocks(m, q, max(h1, h2))
    for s in starts:
        z1, z2, out[:, s:s + qb] = _forward_block(p, x, y[s:s + qb], x2w)
        if cache is not None:
            cache.append((z1, z2))
    return out, cache


def backward(p: Params, x: np.ndarray, y: np.ndarray, grad_d: np.ndarray, cache: list | None = None) -> Params:
    """Gradient of sum_ij grad_d[i, j] * D_ij w.r.t. every parameter (same keys and shapes).

    x (M, D), y (Q, D), grad_d (M, Q); ``cache`` from ``forward(keep=True)``, else the
    activations are recomputed block by block.
    """
    m, d = x.shape
    w1, w2, w3 = p["W1"], p["W2"], p["W3"]
    h1, h2 = w2.shape
    g = {k: np.zeros_like(v) for k, v in p.items()}
    x2, x2w = x * x, (x * x) @ w1
    starts, qb = _blocks(m, y.shape[0], max(h1, h2))
    for n, s in enumerate(starts):
        yb = y[s:s + qb]  # (Qb, D)
        gf = np.ascontiguousarray(grad_d[:, s:s + qb].T).reshape(-1)  # (Qb*M,) in the (j, i) pair order
        z1, z2 = cache[n] if cache is not None else _forward_block(p, x, yb, x2w)[:2]
        z1f, z2f = z1.reshape(h1, -1), z2.reshape(h2, -1)  # (H, Qb*M)
        a1, a2 = _lrelu(z1f), _lrelu(z2f)
        g["W3"] += (a2 @ gf)[:, None]
        g["b3"] += gf.sum()
        dz2 = _times_lrelu_grad(w3 * gf[None, :], z2f)  # (H2, Qb*M)
        g["W2"] += a1 @ dz2.T
        g["b2"] += dz2.sum(1)
        dz1 = _times_lrelu_grad(w2 @ dz2, z1f).reshape(h1, yb.shape[0], m)  # (H1, Qb, M)
        g["b1"] += dz1.sum((1, 2))
        # dW1 = y2^T sum_i dz1 + x2^T sum_j dz1 - 2 sum_ij x_i y_j dz1_ij  (all GEMMs)
        g["W1"] += (yb * yb).T @ dz1.sum(2).T + x2.T @ dz1.sum(1).T
        hb = _hidden_block(yb.shape[0], d, h1)
        for k in range(0, h1, hb):
            ks = slice(k, k + hb)
            t = (dz1[ks].reshape(-1, m) @ x).reshape(-1, yb.shape[0], d)  # (Hb, Qb, D)
            g["W1"][:, ks] -= 2.0 * np.einsum("kjd,jd->dk", t, yb)
    return g


def flops_per_step(m: int, q: int, dim: int, hidden: tuple[int, int]) -> float:
    """FLOPs of one fit step (forward + backward ~ 3x forward), as in the module docstring."""
    h1, h2 = hidden
    return 3.0 * 2.0 * m * q * (dim * h1 + h1 * h2 + h2)
