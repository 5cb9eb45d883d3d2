"""Offline export: backbones, segmenter and navigator -> ONNX; ONNX -> TensorRT engines.

Imports ``edge_foct.runtime`` (names, reference maths); ``runtime`` never imports this package.
"""
