"""WideResNet-50-2 up to layer3 with the PatchCore aggregation inside the graph -> feature ONNX.

image (N, 3, H, W) float32, ImageNet-normalised, H and W multiples of 16
  -> layer2 (N, 512, H/8, W/8), layer3 (N, 1024, H/16, W/16)
  -> patch_features (N, H/8, W/8, 1024), equal to runtime.aggregate.aggregate(l2, l3, 1024, 1024).

The official channel pooling (each layer adaptive-avg-pooled to 1024, the stack of two to 1024)
is, for 512 and 1024 channels, exactly concat(layer2, mean of consecutive pairs of layer3's
channels): 512 -> 1024 repeats every channel twice, 1024 -> 1024 is the identity, and the final
2048 -> 1024 averages consecutive pairs. So the graph averages layer3's channel pairs (a Reshape and a
ReduceMean, before the pooling and upsampling, which commute with it) instead of the (1536, 1024)
pooling MatMul; tests/export/test_wrn.py proves the equality.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from edge_foct.runtime import names
from edge_foct.runtime.backbone import file_sha256

from .aggregation import set_metadata
from .manifest import ExportError, export_torch

FEATURE_DIM = 1024
ARCH = "wide_resnet50_2"
RANDOM_SEED = 0
HOW_TO_GET_WEIGHTS = ("pass --weights PATH (a torchvision wide_resnet50_2 state dict, e.g. "
                      "wide_resnet50_2-95faca4d.pth copied from an online machine's ~/.cache/torch/hub/checkpoints), "
                      "run once online for torchvision's ImageNet weights, "
                      "or --random-weights for an untrained test graph")


def aggregate_wrn(l2: torch.Tensor, l3: torch.Tensor) -> torch.Tensor:
    """(N, 512, h, w), (N, 1024, h/2, w/2) -> (N, h, w, 1024): the PatchCore aggregation for WRN-50-2.

    The mean of consecutive channel pairs (the 2048 -> 1024 pooling of layer3's half) is taken first,
    on layer3's own grid: the 3 x 3 average and the bilinear upsampling act on each channel alone and
    linearly, so they commute with it, and they then run on 512 channels at h/2 x w/2 instead of 1024
    at h x w. Pairing after upsampling compiled to a reference strided Slice in OpenVINO (2 ms of a
    16 ms WRN frame at 256 px, bf16); the Reshape + ReduceMean here is a fused kernel.
    """
    a8 = F.avg_pool2d(l2, 3, stride=1, padding=1)  # (N, 512, h, w), zeros counted like torch's default
    pairs = l3.unflatten(1, (l3.shape[1] // 2, 2)).mean(2)  # (N, 512, h/2, w/2)
    a16 = F.avg_pool2d(pairs, 3, stride=1, padding=1)  # (N, 512, h/2, w/2)
    up = F.interpolate(a16, size=a8.shape[-2:], mode="bilinear", align_corners=False)  # (N, 512, h, w)
    return torch.cat([a8, up], dim=1).permute(0, 2, 3, 1)  # (N, h, w, 1024)


class WideResNetFeatures(nn.Module):
    """The exported contract: ``forward(image) -> patch_features`` (see the module docstring)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.layer2 = net.layer2
        self.layer3 = net.layer3

    def taps(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image (N, 3, H, W) -> layer2 (N, 512, H/8, W/8), layer3 (N, 1024, H/16, W/16)."""
        l2 = self.layer2(self.stem(image))
        return l2, self.layer3(l2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return aggregate_wrn(*self.taps(image))


def build_wide_resnet50(weights: str | Path | None = None,
                        random_weights: bool = False) -> tuple[WideResNetFeatures, str, bool]:
    """-> (module in eval mode, backbone id, pretrained). See ``export_wide_resnet50`` for ``weights``."""
    import torchvision

    if weights == "imagenet":
        w = torchvision.models.Wide_ResNet50_2_Weights.IMAGENET1K_V1  # the weights PatchCore used
        try:
            net = torchvision.models.wide_resnet50_2(weights=w)
        except Exception as e:  # urllib/ssl/http errors when offline or blocked
            raise ExportError(f"torchvision ImageNet weights could not be downloaded "
                              f"({str(e).splitlines()[0][:120]}); {HOW_TO_GET_WEIGHTS}") from None
        return WideResNetFeatures(net).eval(), f"{ARCH}-imagenet1k_v1:layer2+layer3", True
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ExportError(f"--weights {path}: file not found; {HOW_TO_GET_WEIGHTS}")
        try:  # weights_only: a restricted unpickler that runs no code from the file
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ExportError(f"--weights {path}: not a torch state dict ({str(e).splitlines()[0][:120]})") from None
        net = torchvision.models.wide_resnet50_2(weights=None)
        missing, unexpected = net.load_state_dict(state, strict=False)
        needed = [k for k in missing if not k.startswith("fc.") and not k.startswith("layer4.")]
        if needed or unexpected:
            raise ExportError(f"--weights {path}: not a {ARCH} state dict (missing {needed[:3]}, "
                              f"unexpected {list(unexpected)[:3]}); {HOW_TO_GET_WEIGHTS}")
        return WideResNetFeatures(net).eval(), f"{ARCH}-{file_sha256(path)[:12]}:layer2+layer3", True
    if not random_weights:
        raise ExportError(f"no weights for {ARCH}: {HOW_TO_GET_WEIGHTS}")
    torch.manual_seed(RANDOM_SEED)
    net = torchvision.models.wide_resnet50_2(weights=None)  # torchvision's own initialisation
    return WideResNetFeatures(net).eval(), f"{ARCH}-random-seed{RANDOM_SEED}:layer2+layer3", False


def export_module(module: WideResNetFeatures, dst: str | Path, backbone_id: str, pretrained: bool,
                  opset: int = 17) -> Path:
    """Export ``module`` as a feature graph with dynamic batch, height and width."""
    def annotate(model: onnx.ModelProto) -> None:
        set_metadata(model, backbone_id, FEATURE_DIM, pretrained, {names.META_PREFIX + "arch": ARCH})
        # the tracer loses D through the strided slice + concat; the contract has it static
        model.graph.output[0].type.tensor_type.shape.dim[3].dim_value = FEATURE_DIM

    dummy = torch.zeros(1, 3, 64, 64)
    return export_torch(module, (dummy,), dst, [names.BACKBONE_INPUT], [names.BACKBONE_OUTPUT],
                        {names.BACKBONE_INPUT: {0: "batch", 2: "height", 3: "width"},
                         names.BACKBONE_OUTPUT: {0: "batch", 1: "h", 2: "w"}}, opset, annotate)


def export_wide_resnet50(dst: str | Path, weights: str | Path | None = None, random_weights: bool = False,
                         opset: int = 17) -> Path:
    """Write the WRN-50-2 feature ONNX at ``dst``.

    weights: "imagenet" (torchvision download; raises ExportError when it fails), a state-dict
    file, or None with ``random_weights=True`` (recorded as not pretrained); None alone raises
    ExportError saying how to provide weights.
    """
    module, backbone_id, pretrained = build_wide_resnet50(weights, random_weights)
    return export_module(module, dst, backbone_id, pretrained, opset)
