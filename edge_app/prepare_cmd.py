"""``edge-foct prepare-backbone``: classification ONNX -> feature ONNX (graph surgery, no torch)."""

from __future__ import annotations

from pathlib import Path

import click

from edge_foct.runtime import atomic


@click.command("prepare-backbone")
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Feature ONNX to write (give it to fit/demo/serve as --backbone).")
@click.option("--taps", type=click.Choice(["wide", "narrow"]), default="wide", show_default=True,
              help="Tap preset of a known model (wide suits objects, narrow textures).")
@click.option("--tap8", default=None, help="Name of the stride-8 tensor (unknown models).")
@click.option("--tap16", default=None, help="Name of the stride-16 tensor (unknown models).")
@click.option("--layer-dim", type=int, default=None, help="PatchCore per-layer channel pooling (default: none).")
@click.option("--out-dim", type=int, default=None, help="PatchCore final channel pooling.")
@click.option("--random-weights", is_flag=True, help="Record the model as NOT pretrained.")
def command(src, out, taps, tap8, tap16, layer_dim, out_dim, random_weights) -> None:
    """Turn a classification ONNX (SRC) into an edge-foct feature graph."""
    from edge_foct.export.tap_backbone import tap_backbone
    from edge_foct.runtime.backbone import Backbone

    from .backbones import is_feature_graph

    if is_feature_graph(src):  # prepared already: nothing to tap
        info = Backbone.load(src).info
        if out.resolve() != src.resolve():
            atomic.write_bytes(out, src.read_bytes())
        where = "" if out.resolve() == src.resolve() else f"; copied to {out}"
        click.echo(f"{src} is already an edge-foct feature graph ({info.backbone_id}, {info.feature_dim}-d "
                   f"patch features): nothing to prepare{where}")
        return
    tap_backbone(src, out, tap8, tap16, taps, layer_dim, out_dim, pretrained=not random_weights)
    info = Backbone.load(out).info
    click.echo(f"{out}: {info.backbone_id}, {info.feature_dim}-d patch features")
