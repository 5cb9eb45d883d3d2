"""``edge-foct prepare-backbone``: classification ONNX -> feature ONNX (graph surgery, no torch),
the built-in EfficientNet-Lite0 feature graph, and the list of backbones edge-foct knows."""

from __future__ import annotations

from pathlib import Path

import click

from edge_foct.edge_app.backbones import KNOWN_BACKBONES, is_feature_graph
from edge_foct.runtime import atomic
from edge_foct.runtime.errors import EdgeFoctError


def print_known() -> None:
    click.echo("| backbone | where it comes from | licence | D | grid at 256 px |")
    click.echo("|---|---|---|---|---|")
    for b in KNOWN_BACKBONES:
        click.echo(f"| {b.name} | {b.source} | {b.license} | {b.feature_dim} | {b.grid_256} |")


@click.command("prepare-backbone")
@click.argument("src", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Feature ONNX to write (give it to fit/demo/serve as --backbone).")
@click.option("--list", "list_known", is_flag=True, help="List the backbones edge-foct knows and exit.")
@click.option("--builtin", type=click.Choice(["efficientnet-lite0"]), default=None,
              help="Build the feature graph of an installed backbone instead of tapping SRC.")
@click.option("--taps", type=click.Choice(["wide", "narrow", "expand", "output"]), default=None,
              help="Tap preset: wide (default) | narrow for the shared MobileNetV2 / ShuffleNetV2 (wide suits "
                   "objects, narrow textures); expand | output for --builtin efficientnet-lite0 (default: the "
                   "LOCO-chosen one).")
@click.option("--tap8", default=None, help="Name of the stride-8 tensor (unknown models).")
@click.option("--tap16", default=None, help="Name of the stride-16 tensor (unknown models).")
@click.option("--layer-dim", type=int, default=None, help="PatchCore per-layer channel pooling (default: none).")
@click.option("--out-dim", type=int, default=None, help="PatchCore final channel pooling.")
@click.option("--float", "float_graph", is_flag=True,
              help="Rewrite a quantized (int8) source as a float graph: the same features on every CPU.")
@click.option("--random-weights", is_flag=True, help="Record the model as NOT pretrained.")
def command(src, out, list_known, builtin, taps, tap8, tap16, layer_dim, out_dim, float_graph, random_weights) -> None:
    """Turn a classification ONNX (SRC) into an edge-foct feature graph; --list shows the known backbones."""
    from edge_foct.runtime.backbone import Backbone

    if list_known:
        print_known()
        return
    if out is None:
        raise EdgeFoctError("prepare-backbone: --out FEATURES.onnx is required (or --list)")
    if builtin:
        from edge_foct.export.efficientnet_lite import (
            DEFAULT_TAPS,
            build_efficientnet_lite0,
        )

        build_efficientnet_lite0(out, taps=taps or DEFAULT_TAPS)
    elif src is None:
        raise EdgeFoctError("prepare-backbone: give SRC (a classification ONNX), --builtin NAME or --list")
    elif is_feature_graph(src):  # prepared already: nothing to tap
        info = Backbone.load(src).info
        if out.resolve() != src.resolve():
            atomic.write_bytes(out, src.read_bytes())
        where = "" if out.resolve() == src.resolve() else f"; copied to {out}"
        click.echo(f"{src} is already an edge-foct feature graph ({info.backbone_id}, {info.feature_dim}-d "
                   f"patch features): nothing to prepare{where}")
        return
    else:
        from edge_foct.export.tap_backbone import tap_backbone

        tap_backbone(src, out, tap8, tap16, taps or "wide", layer_dim, out_dim, pretrained=not random_weights,
                     float_graph=float_graph)
    info = Backbone.load(out).info
    click.echo(f"{out}: {info.backbone_id}, {info.feature_dim}-d patch features")
