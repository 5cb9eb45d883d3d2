"""The WideResNet-50-2 feature graph the latency benchmarks time: random weights (timing only)."""

from __future__ import annotations

from pathlib import Path

#: where the latency benchmarks keep it between runs. The name carries the graph's version, so that a
#: change to export/wrn.py's graph is not timed on a stale cached file: v2 (2026-12-02) averages
#: layer3's channel pairs before the pooling (v1, ``wrn50-random.onnx``, after the upsampling).
DEFAULT = Path.home() / ".cache" / "edge-foct" / "backbones" / "wrn50-random-v2.onnx"


def ensure_wrn(path: Path) -> Path:
    """Export the random-weights WRN-50-2 graph to ``path`` once (torch side, offline); -> path."""
    if not path.is_file():
        from edge_foct.export.wrn import export_wide_resnet50

        path.parent.mkdir(parents=True, exist_ok=True)
        export_wide_resnet50(path, random_weights=True)
    return path
