"""edge-foct: few-shot industrial anomaly detection for the edge.

Three parts, one direction of import::

    edge_foct.edge_app  ->  edge_foct.runtime  <-  edge_foct.export

``runtime`` is torch-free (NumPy, ONNX Runtime, optionally TensorRT / numba-cuda).
"""

__version__ = "0.1.0"
