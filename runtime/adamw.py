"""AdamW on named NumPy arrays, exactly torch.optim.AdamW's update (the navigator's optimiser).

The CUDA module (runtime/cuda) exposes ``adamw_step`` with the same signature; this is its reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class AdamWState:
    m: dict[str, np.ndarray]  # first moments, same keys/shapes as params
    v: dict[str, np.ndarray]  # second moments
    t: int = 0  # step count

    @classmethod
    def zeros_like(cls, params: dict[str, np.ndarray]) -> "AdamWState":
        return cls({k: np.zeros_like(p) for k, p in params.items()},
                   {k: np.zeros_like(p) for k, p in params.items()}, 0)


def adamw_step(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], state: AdamWState,
               lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01) -> None:
    """In-place update, exactly torch.optim.AdamW's formula (decoupled weight decay
    p -= lr * wd * p; bias-corrected moments; p -= lr * mhat / (sqrt(vhat) + eps))."""
    b1, b2 = betas
    state.t += 1
    bc1 = 1.0 - b1 ** state.t
    bc2_sqrt = math.sqrt(1.0 - b2 ** state.t)
    for k, p in params.items():
        g = grads[k]
        m, v = state.m[k], state.v[k]
        p *= 1.0 - lr * weight_decay  # decoupled decay acts before the moment step, as in torch
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * g * g
        p -= (lr / bc1) * m / (np.sqrt(v) / bc2_sqrt + eps)
