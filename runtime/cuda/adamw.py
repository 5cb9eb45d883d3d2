"""The AdamW update on the GPU: the contract of ``runtime/adamw.py`` (torch.optim.AdamW's formula).

``adamw_kernel`` updates one flat parameter tensor in place, one thread per element:

    p <- p * (1 - lr * wd)                         decoupled weight decay
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

The bias corrections depend only on the step count, so the host computes them once per step in
float64 and passes float32 scalars. ``adamw_step`` takes the same arguments as the reference; its
arrays may be device arrays (updated in place on the GPU, no copies) or host arrays (copied to the
device and back into the caller's arrays: a convenience for tests and one-off use, not the hot path).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ..adamw import AdamWState

TPB = 256
SIG_ADAMW = ("void(float32[::1], float32[::1], float32[::1], float32[::1], "
             "float32, float32, float32, float32, float32, float32, float32, float32)")


@cuda.jit
def adamw_kernel(p, g, m, v, decay, beta1, one_m_beta1, beta2, one_m_beta2, step_size, inv_sqrt_bc2, eps):
    """All arrays (n,) float32, updated in place; decay = 1 - lr*wd, step_size = lr / (1 - b1^t).

    1 - beta arrives from the host: float32(1) - float32(0.999) is 4.7e-5 off 0.001 relative.
    """
    i = cuda.grid(1)
    if i < p.shape[0]:
        gi = g[i]
        mi = beta1 * m[i] + one_m_beta1 * gi
        vi = beta2 * v[i] + one_m_beta2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps)


def adamw_step_device(p, g, m, v, t: int, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                      weight_decay: float = 0.01, stream=0) -> None:
    """One update of a contiguous float32 device tensor (any shape) for step number ``t`` (1-based)."""
    b1, b2 = betas
    scalars = (1.0 - lr * weight_decay, b1, 1.0 - b1, b2, 1.0 - b2, lr / (1.0 - b1 ** t),
               1.0 / math.sqrt(1.0 - b2 ** t), eps)
    flat = [x.reshape(x.size) for x in (p, g, m, v)]
    adamw_kernel[-(-p.size // TPB), TPB, stream](*flat, *(np.float32(s) for s in scalars))


def zeros_state_device(params: dict) -> AdamWState:
    """``AdamWState.zeros_like`` for device-array parameters: zero moments on the GPU."""
    zeros = lambda p: cuda.to_device(np.zeros(p.shape, np.float32))  # noqa: E731
    return AdamWState({k: zeros(p) for k, p in params.items()}, {k: zeros(p) for k, p in params.items()}, 0)


def adamw_step(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], state: AdamWState,
               lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01) -> None:
    """Same contract as ``runtime.adamw.adamw_step``: in place, ``state.t`` advanced by one.

    Per key, the parameter, its gradient and its moments are either all device arrays (updated
    on the GPU, no copies; see ``zeros_state_device``) or all host float32 arrays.
    """
    state.t += 1
    stream = cuda.stream()
    host_out = []
    for key, p in params.items():
        tensors = (p, grads[key], state.m[key], state.v[key])
        if not isinstance(p, np.ndarray):  # a device array (numba, or any __cuda_array_interface__)
            adamw_step_device(*tensors, state.t, lr, betas, eps, weight_decay, stream)
            continue
        d_p, d_g, d_m, d_v = (cuda.to_device(np.ascontiguousarray(x, np.float32), stream=stream) for x in tensors)
        adamw_step_device(d_p, d_g, d_m, d_v, state.t, lr, betas, eps, weight_decay, stream)
        host_out.append(((p, state.m[key], state.v[key]),
                         [d.copy_to_host(stream=stream) for d in (d_p, d_m, d_v)]))
    stream.synchronize()
    for targets, values in host_out:
        for target, value in zip(targets, values):
            target[...] = value
