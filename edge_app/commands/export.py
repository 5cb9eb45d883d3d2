"""``edge-foct export``: WRN-50-2 backbone, SAM segmenter, navigator MLP, WinCLIP's CLIP -> ONNX + manifest.

Each graph is checked right after export (onnx.checker, then ONNX Runtime against torch within the
tolerance below) and recorded in ``OUT/manifest.json``. torch is imported only when this runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from edge_foct.edge_app.exporting import (
    GRAPHS,
    NO_CHECKPOINT,
    export_backbone,
    export_clip_graph,
    export_navigator_graph,
    export_segmenter_graphs,
    parse_hidden,
    require_torch,
)
from edge_foct.runtime.errors import EdgeFoctError


@click.command("export")
@click.option("--what", "what", type=click.Choice([*GRAPHS, "all"]), multiple=True, required=True,
              help="Graph(s) to export; repeat the flag for several (all: backbone, segmenter, navigator).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--weights", default=None, help="WRN-50-2: a torchvision state-dict file. "
              "Default: torchvision's ImageNet weights (needs the network).")
@click.option("--random-weights", is_flag=True, help="WRN-50-2 / CLIP with random weights (recorded as NOT pretrained).")
@click.option("--check-size", type=int, default=256, show_default=True, help="Backbone parity-check input size.")
@click.option("--sam-checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="segment-anything checkpoint (.pth).")
@click.option("--sam-type", type=click.Choice(["vit_b", "vit_l", "vit_h"]), default="vit_b", show_default=True,
              help="SAM size of --sam-checkpoint.")
@click.option("--prompt", type=click.Choice(["box", "centre"]), default="box", show_default=True,
              help="Fixed SAM prompt: a box over the whole frame, or one point at its centre.")
@click.option("--navigator-dim", type=int, default=1024, show_default=True, help="Feature dim D.")
@click.option("--navigator-hidden", default="512,256", show_default=True, help="Hidden sizes H1,H2.")
@click.option("--seed", type=int, default=0, show_default=True, help="Navigator initialisation seed.")
@click.option("--clip-model", default="ViT-B-16-plus-240", show_default=True,
              help="open_clip model for --what clip (WinCLIP's); `tiny`: a small random ViT for tests.")
@click.option("--clip-weights", default=None, help="open_clip pretrained tag (laion400m_e31: WinCLIP's) or a "
              "checkpoint file; or --random-weights.")
@click.option("--clip-object", default="object", show_default=True,
              help="Object name in WinCLIP's prompts, e.g. 'metal plate'.")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset of the graphs.")
def command(what, out, weights, random_weights, check_size, sam_checkpoint, sam_type, prompt,
            navigator_dim, navigator_hidden, seed, clip_model, clip_weights, clip_object, opset) -> None:
    """Export graphs to ONNX, check them against torch, and write OUT/manifest.json."""
    todo = GRAPHS[:3] if "all" in what else tuple(g for g in GRAPHS if g in what)
    if "segmenter" in todo and sam_checkpoint is None:  # fail before any slow export
        raise EdgeFoctError(NO_CHECKPOINT)
    if check_size % 16:
        raise EdgeFoctError(f"--check-size {check_size}: must be a multiple of 16")
    if "backbone" in todo and weights and random_weights:
        raise EdgeFoctError("--weights and --random-weights exclude each other; pick one")
    if "navigator" in todo:
        parse_hidden(navigator_hidden)
    require_torch()
    if "backbone" in todo:
        export_backbone(out, weights, random_weights, opset, check_size)
    if "segmenter" in todo:
        export_segmenter_graphs(out, sam_checkpoint, sam_type, prompt, opset)
    if "navigator" in todo:
        export_navigator_graph(out, navigator_dim, navigator_hidden, seed, opset)
    if "clip" in todo:
        export_clip_graph(out, clip_model, clip_weights, random_weights, clip_object, opset)
    click.echo(f"{out / 'manifest.json'}: {', '.join(todo)}")
