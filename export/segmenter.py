"""segment-anything -> two ONNX graphs that answer "where is the product in this frame?".

encoder:  image (1, 3, S, S) float32, SAM-normalised RGB      -> image_embeddings (1, C, S/16, S/16)
decoder:  image_embeddings (1, C, S/16, S/16), fixed prompt  -> mask (1, 1, S, S) foreground probability

S = 1024 and C = 256 for the released checkpoints (vit_b / vit_l / vit_h). The decoder bakes in
one prompt: a box covering the whole frame ("box", the default) or one positive point at its
centre ("centre"); of SAM's three multi-mask outputs it keeps the one with the highest predicted
IoU (argmax + gather, no control flow). The prompt embeddings and the dense positional encoding
are computed once at construction and stored as buffers, so the graph is just the mask decoder.
The runtime side (resize, normalise, threshold) is runtime/foreground.py's ``SamForeground``.
"""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from edge_foct.runtime import names
from edge_foct.runtime.foreground import SAM_DECODER_FILE, SAM_ENCODER_FILE

from .manifest import ExportError, export_torch, set_graph_metadata

SAM_TYPES = ("vit_b", "vit_l", "vit_h")
PROMPTS = ("box", "centre")


def load_sam(model_type: str, checkpoint: str | Path) -> nn.Module:
    """A released SAM from its checkpoint file (the .pth files of facebookresearch/segment-anything)."""
    from segment_anything import sam_model_registry

    if model_type not in SAM_TYPES:
        raise ExportError(f"--sam-type {model_type!r}: choose one of {SAM_TYPES}")
    path = Path(checkpoint)
    if not path.is_file():
        raise ExportError(f"--sam-checkpoint {path}: file not found; download sam_{model_type}_*.pth from "
                          f"github.com/facebookresearch/segment-anything on an online machine and copy it here")
    sam = sam_model_registry[model_type](checkpoint=None)
    try:  # weights_only: a restricted unpickler that runs no code from the file
        state = torch.load(path, map_location="cpu", weights_only=True)
        sam.load_state_dict(state)
    except Exception as e:
        raise ExportError(f"--sam-checkpoint {path}: not a SAM {model_type} checkpoint "
                          f"({str(e).splitlines()[0][:160]})") from None
    return sam.eval()


def tiny_sam(img_size: int = 64, dim: int = 32, seed: int = 0) -> nn.Module:
    """A randomly initialised SAM with the released architecture at toy sizes (tests, smoke runs):
    ViT of depth 2 (one windowed, one global block, relative positions), prompt dim ``dim``."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    grid = img_size // 16
    sam = Sam(
        image_encoder=ImageEncoderViT(img_size=img_size, patch_size=16, embed_dim=dim, depth=2, num_heads=2,
                                      mlp_ratio=2.0, out_chans=dim, qkv_bias=True, use_rel_pos=True,
                                      norm_layer=partial(nn.LayerNorm, eps=1e-6), window_size=max(grid // 2, 1),
                                      global_attn_indexes=(1,)),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(grid, grid),
                                     input_image_size=(img_size, img_size), mask_in_chans=4),
        mask_decoder=MaskDecoder(transformer_dim=dim, num_multimask_outputs=3, iou_head_depth=3,
                                 iou_head_hidden_dim=dim,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=2 * dim,
                                                               num_heads=2)),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    with torch.no_grad():  # SAM zero-initialises these; random values make the parity test bite
        for name, p in sam.named_parameters():
            if "pos_embed" in name or "rel_pos" in name:
                p.normal_(0.0, 0.5)
    return sam.eval()


class SamForegroundDecoder(nn.Module):
    """``forward(image_embeddings (1, C, e, e)) -> mask (1, 1, S, S)``: exactly the exported contract."""

    def __init__(self, sam: nn.Module, prompt: str = "box") -> None:
        super().__init__()
        if prompt not in PROMPTS:
            raise ExportError(f"--prompt {prompt!r}: choose one of {PROMPTS}")
        s = sam.image_encoder.img_size
        self.size = s
        self.mask_decoder = sam.mask_decoder
        with torch.no_grad():
            if prompt == "box":  # corners of the whole frame, in input pixels (x0, y0, x1, y1)
                sparse, dense = sam.prompt_encoder(points=None, boxes=torch.tensor([[0.0, 0.0, s - 1.0, s - 1.0]]),
                                                   masks=None)
            else:  # one positive point at the centre (SAM pads it with a "not a point")
                pts = (torch.tensor([[[s / 2.0, s / 2.0]]]), torch.tensor([[1]]))
                sparse, dense = sam.prompt_encoder(points=pts, boxes=None, masks=None)
            self.register_buffer("sparse", sparse.clone())  # (1, tokens, C)
            self.register_buffer("dense", dense.clone())  # (1, C, e, e)
            self.register_buffer("image_pe", sam.prompt_encoder.get_dense_pe().clone())  # (1, C, e, e)

    def forward(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        masks, iou = self.mask_decoder.predict_masks(image_embeddings, self.image_pe, self.sparse, self.dense)
        masks, iou = masks[:, 1:], iou[:, 1:]  # (1, 3, 4e, 4e), (1, 3): the multi-mask outputs
        best = torch.argmax(iou, dim=1)  # (1,)
        idx = best.view(-1, 1, 1, 1).expand(-1, 1, masks.shape[2], masks.shape[3])
        low = torch.gather(masks, 1, idx)  # (1, 1, 4e, 4e) logits of the best mask
        up = F.interpolate(low, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return torch.sigmoid(up)  # (1, 1, S, S); SAM's mask threshold (logit 0) is probability 0.5


def export_segmenter(sam: nn.Module, out_dir: str | Path, model_type: str, prompt: str = "box",
                     opset: int = 17) -> tuple[nn.Module, Path, nn.Module, Path]:
    """Write the encoder and decoder graphs; -> (encoder module, path, decoder module, path)."""
    out_dir = Path(out_dir)
    s = sam.image_encoder.img_size
    mean = ",".join(f"{v:g}" for v in sam.pixel_mean.flatten().tolist())
    std = ",".join(f"{v:g}" for v in sam.pixel_std.flatten().tolist())
    common = {names.META_PREFIX + "sam_type": model_type, names.META_PREFIX + "image_size": str(s),
              names.META_PREFIX + "pixel_mean": mean, names.META_PREFIX + "pixel_std": std}

    def meta(graph: str, **extra: str):
        def annotate(model: onnx.ModelProto) -> None:
            set_graph_metadata(model, {names.META_PREFIX + "graph": graph, **common,
                                       **{names.META_PREFIX + k: v for k, v in extra.items()}})
        return annotate

    encoder = sam.image_encoder.eval()
    decoder = SamForegroundDecoder(sam, prompt).eval()
    with warnings.catch_warnings():  # both graphs are static by design: "treated as a constant" is expected
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module="segment_anything")
        enc_path = export_torch(encoder, (torch.zeros(1, 3, s, s),), out_dir / SAM_ENCODER_FILE,
                                [names.SEGMENTER_INPUT], [names.SEGMENTER_EMBEDDINGS], {}, opset,
                                meta("segmenter_encoder"))
        with torch.no_grad():
            emb = encoder(torch.zeros(1, 3, s, s))
        dec_path = export_torch(decoder, (emb,), out_dir / SAM_DECODER_FILE, [names.SEGMENTER_EMBEDDINGS],
                                [names.SEGMENTER_OUTPUT], {}, opset, meta("segmenter_decoder", prompt=prompt))
    return encoder, enc_path, decoder, dec_path
