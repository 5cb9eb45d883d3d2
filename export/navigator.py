"""The CT navigator MLP d(x, y) = MLP((x - y)^2) -> ONNX (forward pass) + initial weights (.npz).

    sq_diff (P, D) -> Linear(D, H1) -> LeakyReLU -> Linear(H1, H2) -> LeakyReLU -> Linear(H2, 1) -> (P, 1)

Authors' sizes D=1024, H1=512, H2=256, PyTorch's default Linear initialisation (seeded here).
The ``.npz`` is what the runtime's own optimiser starts from, in x @ W layout (the transpose of
torch's ``Linear.weight``): W1 (D, H1), b1 (H1,), W2 (H1, H2), b2 (H2,), W3 (H2, 1), b3 (1,).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from edge_foct.runtime import atomic, names

from .manifest import export_torch, set_graph_metadata

ONNX_FILE = "navigator.onnx"
WEIGHTS_FILE = "navigator_init.npz"


@dataclass(frozen=True)
class NavigatorConfig:
    dim: int = 1024  # D: feature dimension of the patch features
    hidden: tuple[int, int] = (512, 256)  # H1, H2
    negative_slope: float = 0.01  # LeakyReLU, torch's default
    seed: int = 0

    def to_json(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden)}


class Navigator(nn.Module):
    """``forward(sq_diff (P, D)) -> distance (P, 1)``: exactly the exported contract."""

    def __init__(self, cfg: NavigatorConfig) -> None:
        super().__init__()
        torch.manual_seed(cfg.seed)  # default Linear init (kaiming-uniform a=sqrt(5)) from a fixed seed
        h1, h2 = cfg.hidden
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, h1), nn.LeakyReLU(cfg.negative_slope),
                                 nn.Linear(h1, h2), nn.LeakyReLU(cfg.negative_slope),
                                 nn.Linear(h2, 1))

    def forward(self, sq_diff: torch.Tensor) -> torch.Tensor:
        return self.mlp(sq_diff)

    def weights(self) -> dict[str, np.ndarray]:
        """x @ W layout: W1 (D, H1), b1 (H1,), W2 (H1, H2), b2 (H2,), W3 (H2, 1), b3 (1,)."""
        out = {}
        for k, layer in enumerate((self.mlp[0], self.mlp[2], self.mlp[4]), start=1):
            out[f"W{k}"] = layer.weight.detach().numpy().T.astype(np.float32).copy()
            out[f"b{k}"] = layer.bias.detach().numpy().astype(np.float32).copy()
        return out


def export_navigator(out_dir: str | Path, cfg: NavigatorConfig = NavigatorConfig(),
                     opset: int = 17) -> tuple[Navigator, Path, Path]:
    """Write ``navigator.onnx`` (dynamic P) and ``navigator_init.npz``; -> (module, onnx, npz)."""
    out_dir = Path(out_dir)
    module = Navigator(cfg).eval()

    def annotate(model: onnx.ModelProto) -> None:
        set_graph_metadata(model, {names.META_PREFIX + "graph": "navigator",
                                   names.META_PREFIX + "navigator_dim": str(cfg.dim),
                                   names.META_PREFIX + "navigator_hidden": ",".join(map(str, cfg.hidden)),
                                   names.META_PREFIX + "leaky_relu_negative_slope": repr(cfg.negative_slope)})

    onnx_path = export_torch(module, (torch.zeros(4, cfg.dim),), out_dir / ONNX_FILE,
                             [names.NAVIGATOR_INPUT], [names.NAVIGATOR_OUTPUT],
                             {names.NAVIGATOR_INPUT: {0: "pairs"}, names.NAVIGATOR_OUTPUT: {0: "pairs"}},
                             opset, annotate)
    npz = out_dir / WEIGHTS_FILE
    atomic.write_npz(npz, module.weights())
    return module, onnx_path, npz
