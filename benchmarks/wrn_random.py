"""The WideResNet-50-2 feature graph the latency benchmarks time: random weights (timing only)."""

from __future__ import annotations

from pathlib import Path

#: where the latency benchmarks keep it between runs
DEFAULT = Path.home() / ".cache" / "edge-foct" / "backbones" / "wrn50-random.onnx"


def ensure_wrn(path: Path) -> Path:
    """Export the random-weights WRN-50-2 graph to ``path`` once (torch side, offline); -> path."""
    if not path.is_file():
        from edge_foct.export.wrn import export_wide_resnet50

        path.parent.mkdir(parents=True, exist_ok=True)
        export_wide_resnet50(path, random_weights=True)
    return path
