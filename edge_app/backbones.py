"""Backbone resolution, in this order:

1. ``--backbone FILE``;
2. the ``EDGE_FOCT_BACKBONE`` variable;
3. the user cache folder (``$EDGE_FOCT_CACHE`` or ``~/.cache/edge-foct``): ``backbones/default.onnx``;
4. torchvision's ImageNet WideResNet-50-2, exported into the cache, when torch is installed and
   the machine is online;
5. a randomly initialised CNN (every result then carries a warning).

A classification ONNX of a known model (the shared MobileNetV2 / ShuffleNetV2) given in 1-3 is
turned into a feature graph in the cache once (``edge-foct prepare-backbone`` does it by hand).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edge_foct.runtime import names
from edge_foct.runtime.backbone import file_sha256
from edge_foct.runtime.errors import BackboneError, EdgeFoctError

log = logging.getLogger(__name__)

UNTRAINED_WARNING = "scores come from an untrained (randomly initialised) backbone: not meaningful"


def cache_dir() -> Path:
    root = os.environ.get("EDGE_FOCT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edge-foct")
    return Path(root)


@dataclass(frozen=True)
class Resolved:
    path: Path
    source: str  # "flag" | "env" | "cache" | "torchvision" | "random"


def is_feature_graph(path: Path) -> bool:
    from edge_foct.export.onnx_io import load_onnx  # onnx only, no torch

    model = load_onnx(path, load_external_data=False)
    return any(o.name == names.BACKBONE_OUTPUT for o in model.graph.output)


def as_feature_graph(path: Path, taps: str = "wide") -> Path:
    """A feature graph for ``path``: itself, or the cached tap of a known classification model."""
    if not path.is_file():
        raise BackboneError(f"{path}: backbone file not found")
    if is_feature_graph(path):
        return path
    from edge_foct.export.tap_backbone import KNOWN_TAPS, tap_backbone

    sha = file_sha256(path)
    if sha not in KNOWN_TAPS:
        raise BackboneError(f"{path}: a classification graph of an unknown model; run `edge-foct "
                            f"prepare-backbone {path} --tap8 NAME --tap16 NAME --out FEATURES.onnx`")
    dst = cache_dir() / "backbones" / f"{KNOWN_TAPS[sha][0]}-{taps}-{sha[:12]}.onnx"
    if not dst.is_file():
        log.info("tapping %s (%s taps) -> %s", path.name, taps, dst)
        tmp = dst.with_suffix(".tmp.onnx")
        tap_backbone(path, tmp, taps=taps)
        os.replace(tmp, dst)
    return dst


def _torchvision_backbone(dst: Path) -> Path | None:
    """Export torchvision's ImageNet WRN-50-2 into the cache; None when torch or the network is missing."""
    try:
        from edge_foct.export.wrn import export_wide_resnet50
    except ImportError:
        return None
    try:
        return export_wide_resnet50(dst, weights="imagenet")
    except (EdgeFoctError, OSError) as e:  # offline or no torchvision: the weights are not available
        log.info("torchvision ImageNet weights not available (%s)", str(e).splitlines()[0][:120])
        return None


def resolve_backbone(flag: str | os.PathLike | None, taps: str = "wide", allow_download: bool = True) -> Resolved:
    if flag:
        return Resolved(as_feature_graph(Path(flag), taps), "flag")
    env = os.environ.get("EDGE_FOCT_BACKBONE")
    if env:
        return Resolved(as_feature_graph(Path(env), taps), "env")
    cached = cache_dir() / "backbones" / "default.onnx"
    if cached.is_file():
        return Resolved(as_feature_graph(cached, taps), "cache")
    wrn = cache_dir() / "backbones" / "wide_resnet50_2-imagenet.onnx"
    if wrn.is_file():
        return Resolved(wrn, "cache")
    if allow_download and (got := _torchvision_backbone(wrn)) is not None:
        return Resolved(got, "torchvision")
    rnd = cache_dir() / "backbones" / "random-cnn-seed0.onnx"
    if not rnd.is_file():
        from edge_foct.export.random_backbone import build_random_backbone

        build_random_backbone(rnd)
    log.warning("no pretrained backbone found (flag, EDGE_FOCT_BACKBONE, %s, torchvision): using a "
                "randomly initialised CNN; %s", cached, UNTRAINED_WARNING)
    return Resolved(rnd, "random")
