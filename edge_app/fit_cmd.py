"""``edge-foct fit``: support images -> memory bank folder."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np

from edge_foct.runtime.config import load_config
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.fit import fit_bank
from edge_foct.runtime.image_io import list_images, read_image
from edge_foct.runtime.threads import ThreadPlan

from .backbones import UNTRAINED_WARNING, resolve_backbone
from .inspect_session import load_backbone
from .run_options import engine_option, start_threads, threads_option

log = logging.getLogger("edge_foct.fit")


def pick_support(paths: list[Path], shots: int | None, seed: int) -> list[Path]:
    """All images, or ``shots`` of them drawn with ``seed`` (sorted, so the draw is reproducible)."""
    if not paths:
        raise EdgeFoctError("no support images found (expected .png/.jpg/.bmp/.tif files)")
    if shots is None:
        return paths
    if shots < 1 or shots > len(paths):
        raise EdgeFoctError(f"--shots {shots}: need between 1 and {len(paths)} (images found)")
    idx = np.random.default_rng(seed).choice(len(paths), size=shots, replace=False)
    return [paths[i] for i in sorted(idx)]


def run_fit(support: list[str], backbone: str | None, out: Path, shots: int | None, seed: int,
            config_path: str | None, method: str | None, preset: str | None, size: int | None,
            threshold: float | None, foreground=None, engine: str = "auto", plan: ThreadPlan | None = None) -> Path:
    config = load_config(config_path)
    config = config.replace(method={"name": method, "preset": preset}, threshold={"value": threshold},
                            input={"resize": size, "crop": size} if size else {})
    paths = pick_support(list_images(support), shots, seed)
    images = [read_image(p) for p in paths]  # all read before anything is written
    resolved = resolve_backbone(backbone)
    bb, _ = load_backbone(resolved.path, engine, plan)
    log.info("backbone %s (%s, %s) on %s", bb.info.backbone_id, resolved.source,
             "pretrained" if bb.info.pretrained else "RANDOM", bb.engine.description)
    bank = fit_bank(bb, images, config, sources=[str(p) for p in paths], foreground=foreground,
                    extra_manifest={"shots": len(paths), "seed": seed})
    bank.save(out)
    t = bank.manifest["threshold"]
    log.info("bank %s: method %s, %d support images, threshold %.4g (%s)", out, bank.method_name,
             len(paths), t["value"], t["rule"])
    if not bb.info.pretrained:
        log.warning(UNTRAINED_WARNING)
    return out


@click.command("fit")
@click.option("--support", "support", multiple=True, required=True,
              help="Folder(s) or image file(s) of good parts (repeatable).")
@click.option("--backbone", type=click.Path(dir_okay=False), default=None,
              help="Feature ONNX (or a known classification ONNX). Default: see `edge-foct demo --help`.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Bank folder to write.")
@click.option("--shots", type=int, default=None, help="Draw this many support images (default: all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the support draw.")
@click.option("--method", default=None, help="Method name (default from config: patchcore).")
@click.option("--preset", default=None, help="Method preset (e.g. foct: paper | edge).")
@click.option("--size", type=int, default=None, help="Input size (resize = crop = SIZE).")
@click.option("--threshold", type=float, default=None, help="Override the learnt threshold.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="TOML config.")
@engine_option
@threads_option
def command(support, backbone, out, shots, seed, method, preset, size, threshold, config_path, engine, threads) -> None:
    """Learn a memory bank from a few images of good parts."""
    plan = start_threads(threads)
    run_fit(list(support), backbone, out, shots, seed, config_path, method, preset, size, threshold,
            engine=engine, plan=plan)
