"""The CLIP image encoder WinCLIP uses (open_clip ViT-B/16+ at 240 px) -> one feature ONNX.

image (N, 3, S, S) float32, ImageNet-normalised like every feature graph (the graph turns it into
CLIP's normalisation: an affine map per channel), S fixed by the positional embeddings (240)
  -> tokens t = ln_pre(patch embedding + class token + positions)          (N, 1 + g*g, W), g = S/16
  -> the full image through the transformer: image embedding (class token, ln_post, proj) (N, E)
     and the patch tokens after ln_post                                     (N, g*g, W)
  -> per window size k (2, 3: WinCLIP's small and mid scales) every k x k window at stride 1: its
     tokens gathered from t (class token + k*k patch tokens, original positions kept) and run
     through the same transformer as a batch of short sequences; its embedding is the class token
     through ln_post and proj (WinCLIP's masked encoding: a window *is* the visible tokens)
  -> patch_features (N, g, g, P + E (1 + #sizes)), packed as runtime/names.py describes.

Why batched gathers and not a mask input: a window sees only its own tokens, so a window of k*k
patches costs a sequence of 1 + k*k tokens (5 and 10) instead of an attention mask over all 226;
the gather indices depend only on (g, k), so they are constants of the graph and no data-dependent
control flow is traced. At 240 px: 196 + 169 windows, 2670 tokens per image, about 12x the full
image's 226 (the cost WinCLIP pays). The memory bank stays runtime data; nothing of it is in here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from edge_foct.runtime import names
from edge_foct.runtime.windows import token_index

from .aggregation import set_metadata
from .manifest import ExportError, export_torch

ARCH = "ViT-B-16-plus-240"
PRETRAINED_TAG = "laion400m_e31"  # the checkpoint WinCLIP (and seed 001) use
WINDOW_SIZES = (2, 3)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RANDOM_SEED = 0
#: a tiny ViT for the tests (64 px, 4 x 4 patches): the same code path, seconds to export
TINY_CONFIG = {"embed_dim": 16,
               "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
HOW_TO_GET_WEIGHTS = (f"pass --clip-weights {PRETRAINED_TAG} (open_clip's tag: it reads the file from open_clip's / "
                      f"Hugging Face's cache, or downloads it where the network allows) or --clip-weights FILE (an "
                      f"open_clip {ARCH} checkpoint, e.g. open_clip_pytorch_model.bin copied from an online "
                      f"machine), or --random-weights for an untrained test graph")


class WinClipFeatures(nn.Module):
    """The exported contract: ``forward(image) -> patch_features`` (see the module docstring)."""

    def __init__(self, visual: nn.Module, window_sizes: tuple[int, ...] = WINDOW_SIZES) -> None:
        super().__init__()
        self.visual = visual
        self.grid = int(visual.grid_size[0])
        self.window_sizes = tuple(window_sizes)
        mean_in, std_in = torch.tensor(names.IMAGENET_MEAN), torch.tensor(names.IMAGENET_STD)
        mean, std = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
        # ImageNet-normalised x -> CLIP-normalised: (x std_in + mean_in - mean) / std
        self.register_buffer("gain", (std_in / std).view(1, 3, 1, 1))
        self.register_buffer("bias", ((mean_in - mean) / std).view(1, 3, 1, 1))
        for k in self.window_sizes:
            self.register_buffer(f"tokens{k}", torch.from_numpy(token_index(self.grid, k)))  # (nw, 1 + k*k)

    @property
    def patch_dim(self) -> int:
        return int(self.visual.ln_post.normalized_shape[0])

    @property
    def embed_dim(self) -> int:
        return int(self.visual.proj.shape[1])

    def encode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L, W) after ln_pre -> class embedding (B, E), other tokens after ln_post (B, L-1, W)."""
        x = self.visual.ln_post(self.visual.transformer(tokens))  # (B, L, W)
        return x[:, 0] @ self.visual.proj, x[:, 1:]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        n, g = image.shape[0], self.grid
        t = self.visual._embeds(image * self.gain + self.bias)  # (N, 1 + g*g, W)
        emb, patches = self.encode(t)  # (N, E), (N, g*g, W)
        e = emb.shape[-1]
        parts = [patches.reshape(n, g, g, -1), emb[:, None, None, :].expand(n, g, g, e)]
        for k in self.window_sizes:
            idx = getattr(self, f"tokens{k}")  # (nw, 1 + k*k)
            win, _ = self.encode(t[:, idx].flatten(0, 1))  # (N * nw, 1 + k*k, W) -> (N * nw, E)
            m = g - k + 1
            parts.append(F.pad(win.reshape(n, m, m, e), (0, 0, 0, k - 1, 0, k - 1)))  # (N, g, g, E), anchored top-left
        return torch.cat(parts, dim=-1)  # (N, g, g, P + E (1 + #sizes))


def build_clip(model_name: str = ARCH, weights: str | None = None, random_weights: bool = False,
               tiny: bool = False) -> tuple[nn.Module, str, bool]:
    """-> (open_clip CLIP model in eval mode, backbone id, pretrained).

    weights: an open_clip pretrained tag (e.g. laion400m_e31) or a checkpoint file; None with
    ``random_weights`` (recorded as not pretrained); ``tiny``: TINY_CONFIG with random weights (tests).
    """
    import open_clip

    if tiny:
        torch.manual_seed(RANDOM_SEED)
        cfg = TINY_CONFIG
        model = open_clip.model.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"])
        return model.eval(), f"clip-tiny-random-seed{RANDOM_SEED}", False
    if weights is None and not random_weights:
        raise ExportError(f"no weights for {model_name}: {HOW_TO_GET_WEIGHTS}")
    if weights is not None and random_weights:
        raise ExportError("--clip-weights and --random-weights exclude each other; pick one")
    torch.manual_seed(RANDOM_SEED)
    try:
        model = open_clip.create_model(model_name, pretrained=weights, require_pretrained=weights is not None)
    except Exception as e:  # open_clip raises RuntimeError / OSError / HF hub errors when weights are missing
        raise ExportError(f"open_clip could not build {model_name} with weights {weights!r} "
                          f"({str(e).splitlines()[0][:160]}); {HOW_TO_GET_WEIGHTS}") from None
    if weights is None:
        return model.eval(), f"{model_name}-random-seed{RANDOM_SEED}", False
    label = Path(weights).name if Path(weights).is_file() else weights
    return model.eval(), f"{model_name}-{label}", True


def export_clip_image(module: WinClipFeatures, dst: str | Path, backbone_id: str, pretrained: bool,
                      side_data: str, opset: int = 17) -> Path:
    """Export ``module`` as a feature graph (dynamic batch, fixed size) that names its side data."""
    size = module.grid * 16

    def annotate(model: onnx.ModelProto) -> None:
        dim = module.patch_dim + module.embed_dim * (1 + len(module.window_sizes))
        set_metadata(model, backbone_id, dim, pretrained,
                     {names.META_PREFIX + "arch": "open_clip " + backbone_id.split("-random")[0],
                      names.META_FEATURE_STRIDE: "16", names.META_SIDE_DATA: side_data})
        model.graph.output[0].type.tensor_type.shape.dim[3].dim_value = dim

    dummy = torch.zeros(1, 3, size, size)
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel has no ONNX export
    try:
        return export_torch(module, (dummy,), dst, [names.BACKBONE_INPUT], [names.BACKBONE_OUTPUT],
                            {names.BACKBONE_INPUT: {0: "batch"}, names.BACKBONE_OUTPUT: {0: "batch"}}, opset,
                            annotate)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def random_image(module: WinClipFeatures, n: int = 1, seed: int = 0) -> np.ndarray:
    """(n, 3, S, S) float32 standard-normal input at the graph's size (for parity checks)."""
    s = module.grid * 16
    return np.random.default_rng(seed).standard_normal((n, 3, s, s)).astype(np.float32)
