"""Lean, torch-free inference runtime: engines, features, memory, transport, methods.

Never imports torch, ``edge_foct.export`` or segment-anything (tests/test_import_direction.py).
"""
