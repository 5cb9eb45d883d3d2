"""The GPU side of the transport maths: numba-cuda kernels behind the NumPy reference signatures.

- ``sinkhorn.py``: log-domain Sinkhorn (``sinkhorn_log``, same contract as ``runtime/sinkhorn.py``).
- ``adamw.py``: the AdamW update (``adamw_step``, same contract as ``runtime/adamw.py``).
- ``soft_nn.py``: the fused soft nearest-neighbour transport score (FOCT ``edge`` step 0).
- ``ct_step.py``: the fused CT step of the full navigator (``ct_step``, same contract as
  ``runtime/ct_step.py``) and the navigator fit (``fit_navigator``, as ``runtime/transport.py``), run
  by the kernels of ``ct_kernels.py`` (forward, statistics, reductions), ``ct_backward.py`` and
  ``ct_layers.py`` (tile geometry, packed parameter layout, the shared layer routines).
- ``lse.py``: the streaming log-sum-exp device functions the kernels share.
- ``catalog.py``: every kernel with its signature, for ahead-of-time PTX builds (``compile_ptx``).
- ``probe.py``: what this machine offers (CUDA devices, numba-cuda, libNVVM, TensorRT), no side effects.

Importing this package loads nothing; the kernel modules import numba-cuda (the ``gpu`` extra).
Which implementation runs is decided once, in ``runtime/compute_backend.py``.
"""
