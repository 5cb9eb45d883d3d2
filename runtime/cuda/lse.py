"""Device functions for a streaming (online) log-sum-exp, shared by the Sinkhorn and soft-NN kernels.

A partial sum is a pair (mx, s) meaning ``s * exp(mx)``: adding a term never overflows, and two
partials merge exactly, so each thread reduces its strided share and the block merges the pairs.
An empty partial is (-inf, 0); the guards keep ``exp(-inf - -inf)`` (NaN) out of the sums.
All arithmetic stays float32 (a float64 exp runs at 1/64 rate on consumer GPUs).
``inline="always"`` inlines them at numba-IR level into each kernel: besides saving calls, it lets
``cuda.compile_ptx`` build the kernels for a chosen architecture on a machine with no GPU (a
separately compiled device function asks the driver for the current device's architecture).
"""

from __future__ import annotations

import math

from numba import cuda, float32

NEG_INF = float32(-math.inf)


@cuda.jit(device=True, inline="always")
def lse_push(mx, s, x):
    """Add exp(x) to the partial (mx, s)."""
    if x <= mx:
        if x == NEG_INF:
            return mx, s
        return mx, s + math.exp(x - mx)
    return x, s * math.exp(mx - x) + float32(1.0)


@cuda.jit(device=True, inline="always")
def lse_merge(m1, s1, m2, s2):
    """Merge two partials."""
    if m2 > m1:
        m1, s1, m2, s2 = m2, s2, m1, s1
    if m2 == NEG_INF:
        return m1, s1
    return m1, s1 + s2 * math.exp(m2 - m1)


@cuda.jit(device=True, inline="always")
def block_lse(smax, ssum, t, width):
    """Tree-merge ``width`` (a power of two) partials in shared memory; the result lands in slot 0.

    Every thread of the block must call it (it synchronises).
    """
    cuda.syncthreads()
    w = width // 2
    while w > 0:
        if t < w:
            m, s = lse_merge(smax[t], ssum[t], smax[t + w], ssum[t + w])
            smax[t] = m
            ssum[t] = s
        cuda.syncthreads()
        w //= 2


@cuda.jit(device=True, inline="always")
def block_sum(buf, t, width):
    """Tree-sum ``width`` (a power of two) floats in shared memory into slot 0 (synchronises)."""
    cuda.syncthreads()
    w = width // 2
    while w > 0:
        if t < w:
            buf[t] += buf[t + w]
        cuda.syncthreads()
        w //= 2
