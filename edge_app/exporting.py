"""Export graphs to ONNX (``edge-foct export``): backbone, segmenter, navigator, CLIP; each checked
against its torch model (tolerances ``TOL``). Needs the ``export`` extra (torch)."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from edge_foct.runtime.errors import EdgeFoctError

GRAPHS = ("backbone", "segmenter", "navigator", "clip")


#: parity tolerances (|ort - torch| <= atol + rtol * |torch|): float32 kernels differ in summation
#: order; a wrong graph misses these by orders of magnitude (measured max |err|: WRN 4e-5 on |ref| 49)
TOL = {"backbone": (1e-3, 1e-3), "segmenter": (1e-3, 1e-3), "navigator": (1e-4, 1e-5), "clip": (1e-3, 1e-3)}


NO_CHECKPOINT = ("--what segmenter needs --sam-checkpoint FILE (sam_vit_b_01ec64.pth etc. from "
                 "github.com/facebookresearch/segment-anything); without it the runtime uses the classical "
                 "foreground estimator: export only --what backbone --what navigator")


def export_backbone(out: Path, weights: str | None, random_weights: bool, opset: int, check_size: int) -> None:
    from edge_foct.export.manifest import check_parity, record_graph
    from edge_foct.export.wrn import (
        ARCH,
        FEATURE_DIM,
        build_wide_resnet50,
        export_module,
    )

    source = weights or (None if random_weights else "imagenet")
    module, backbone_id, pretrained = build_wide_resnet50(source, random_weights)
    path = export_module(module, out / f"{ARCH}.onnx", backbone_id, pretrained, opset)
    rng = np.random.default_rng(0)
    rtol, atol = TOL["backbone"]
    parity = []
    for size in (check_size, check_size + 16):  # two sizes: the dynamic height/width really work
        x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
        parity += check_parity(module, path, {"image": x}, rtol, atol)
    config = {"arch": ARCH, "weights": str(source) if source else "random", "pretrained": pretrained,
              "backbone_id": backbone_id, "feature_dim": FEATURE_DIM, "taps": ["layer2", "layer3"],
              "aggregation": "3x3 avg, layer3 bilinear to layer2 grid, adaptive channel pool 1024/1024"}
    record_graph(out, "backbone", path, opset, config, parity)
    _report(path, parity, "" if pretrained else "  (random weights: recorded as NOT pretrained)")


def export_segmenter_graphs(out: Path, checkpoint: Path | None, sam_type: str, prompt: str, opset: int) -> None:
    import torch

    from edge_foct.export.manifest import check_parity, record_graph
    from edge_foct.export.segmenter import export_segmenter, load_sam

    if checkpoint is None:
        raise EdgeFoctError(NO_CHECKPOINT)
    sam = load_sam(sam_type, checkpoint)
    encoder, enc_path, decoder, dec_path = export_segmenter(sam, out, sam_type, prompt, opset)
    s = sam.image_encoder.img_size
    rtol, atol = TOL["segmenter"]
    x = np.random.default_rng(0).standard_normal((1, 3, s, s)).astype(np.float32)
    enc_parity = check_parity(encoder, enc_path, {"image": x}, rtol, atol)
    with torch.no_grad():
        emb = encoder(torch.from_numpy(x)).numpy()
    dec_parity = check_parity(decoder, dec_path, {"image_embeddings": emb}, rtol, atol)
    config = {"sam_type": sam_type, "checkpoint": str(checkpoint), "image_size": s, "prompt": prompt,
              "mask_selection": "argmax predicted IoU of the 3 multi-mask outputs"}
    record_graph(out, "segmenter_encoder", enc_path, opset, config, enc_parity)
    record_graph(out, "segmenter_decoder", dec_path, opset, config, dec_parity)
    _report(enc_path, enc_parity)
    _report(dec_path, dec_parity)


def parse_hidden(hidden: str) -> tuple[int, int]:
    try:
        h1, h2 = (int(v) for v in hidden.split(","))
    except ValueError:
        raise EdgeFoctError(f"--navigator-hidden {hidden!r}: give two sizes, e.g. 512,256") from None
    return h1, h2


def require_torch() -> None:
    """export runs torch: a lean install (no export extra) gets one line saying how to add it."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise EdgeFoctError("export needs torch, which this install lacks; add the export extra "
                            "(pip install -e \".[export]\") or export on another machine and copy the ONNX") from None


def export_navigator_graph(out: Path, dim: int, hidden: str, seed: int, opset: int) -> None:
    from edge_foct.export.manifest import check_parity, record_graph
    from edge_foct.export.navigator import NavigatorConfig, export_navigator
    from edge_foct.runtime import names

    h1, h2 = parse_hidden(hidden)
    cfg = NavigatorConfig(dim=dim, hidden=(h1, h2), seed=seed)
    module, path, npz = export_navigator(out, cfg, opset)
    x = np.random.default_rng(0).random((257, dim), dtype=np.float32)  # squared differences are >= 0
    rtol, atol = TOL["navigator"]
    parity = check_parity(module, path, {names.NAVIGATOR_INPUT: x}, rtol, atol)
    config = {**cfg.to_json(), "weights_npz": npz.name,
              "npz_layout": "x @ W: W1 (D,H1) b1 (H1,) W2 (H1,H2) b2 (H2,) W3 (H2,1) b3 (1,)"}
    record_graph(out, "navigator", path, opset, config, parity, extra_files=(npz,))
    _report(path, parity, f"  + {npz.name}")


def export_clip_graph(out: Path, model_name: str, weights: str | None, random_weights: bool, object_name: str,
                      opset: int) -> Path:
    """WinCLIP's image encoder (export/clip_vit.py) + its text side data (export/clip_text.py)."""
    from edge_foct.export.clip_text import describe, text_side_data, write_side_data
    from edge_foct.export.clip_vit import (
        WinClipFeatures,
        build_clip,
        export_clip_image,
        random_image,
    )
    from edge_foct.export.manifest import check_parity, record_graph

    tiny = model_name == "tiny"
    model, backbone_id, pretrained = build_clip(model_name, weights, random_weights, tiny=tiny)
    module = WinClipFeatures(model.visual).eval()
    stem = "clip_tiny" if tiny else f"clip_{model_name}"
    side = f"{stem}.text.npz"
    path = export_clip_image(module, out / f"{stem}.onnx", backbone_id, pretrained, side, opset)
    rtol, atol = TOL["clip"]
    parity = check_parity(module, path, {"image": random_image(module, 2)}, rtol, atol)  # batch 2: dynamic batch
    npz = write_side_data(out / side, text_side_data(model, module, object_name), path)
    config = {"arch": "tiny (tests)" if tiny else model_name, "weights": weights or "random",
              "pretrained": pretrained, "backbone_id": backbone_id, "input_size": module.grid * 16,
              "grid": module.grid, "patch_dim": module.patch_dim, "embed_dim": module.embed_dim,
              "window_sizes": list(module.window_sizes), "side_data": side, "prompts": describe(object_name),
              "windows": "tokens of each k x k window gathered (class token + k*k patches) and encoded as a batch"}
    record_graph(out, "clip", path, opset, config, parity, extra_files=(npz,))
    _report(path, parity, f"  + {npz.name}" + ("" if pretrained else "  (random weights: recorded as NOT pretrained)"))
    return path


def _report(path: Path, parity: list, note: str = "") -> None:
    worst = max(parity, key=lambda p: p.max_abs_err)
    click.echo(f"{path}: ok (checker; ONNX Runtime vs torch max |err| {worst.max_abs_err:.2g}, "
               f"rtol {worst.rtol:g} atol {worst.atol:g}){note}")
