"""``edge-foct fit``: support images -> memory bank folder."""

from __future__ import annotations

import logging
from pathlib import Path

import click
import numpy as np

from edge_foct.runtime.config import check_config, load_config
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.fit import fit_bank
from edge_foct.runtime.image_io import list_images, read_image
from edge_foct.runtime.methods import METHODS, method_class
from edge_foct.runtime.preprocess import image_aspect
from edge_foct.runtime.threads import ThreadPlan
from edge_foct.runtime.threshold import finite_threshold

from .backbones import UNTRAINED_WARNING, resolve_backbone
from .cli_options import INPUT_SIZE, METHOD, PRESET_HELP, methods_epilog
from .inspect_session import load_backbone
from .options import BUDGET, FINITE
from .out_dir import ensure_writable, refuse_existing_bank
from .run_options import engine_option, start_threads, threads_option

log = logging.getLogger("edge_foct.fit")


#: without --shots, at most this many support images are drawn: the fit's cost grows with K^2
#: (benchmarks/threshold_rules.md, fit scaling) and 16 good parts already cover a line's variation
DEFAULT_MAX_SHOTS = 16


def pick_support(paths: list[Path], shots: int | None, seed: int) -> list[Path]:
    """All images (at most DEFAULT_MAX_SHOTS), or ``shots`` of them drawn with ``seed`` (sorted, so
    the draw is reproducible); none for ``shots`` 0 (a zero-shot method)."""
    if shots == 0:
        return []
    if not paths:
        raise EdgeFoctError("no support images found (expected .png/.jpg/.bmp/.tif files)")
    if shots is None:
        if len(paths) <= DEFAULT_MAX_SHOTS:
            return paths
        log.warning("%d support images found: drawing %d (--shots N to use more; the fit's cost grows "
                    "with N^2); pass others as --calibrate DIR to set the threshold", len(paths), DEFAULT_MAX_SHOTS)
        shots = DEFAULT_MAX_SHOTS
    if shots < 1 or shots > len(paths):
        raise EdgeFoctError(f"--shots {shots}: need between 0 (zero-shot methods) and {len(paths)} (images found)")
    idx = np.random.default_rng(seed).choice(len(paths), size=shots, replace=False)
    return [paths[i] for i in sorted(idx)]


def run_fit(support: list[str], backbone: str | None, out: Path, shots: int | None, seed: int,
            config_path: str | None, method: str | None, preset: str | None, size: int | None,
            threshold: float | None, foreground=None, force: bool = False, download: bool = False,
            keep_aspect: bool = False, calibrate: list[str] | None = None,
            max_false_alarms: float | None = None, engine: str = "auto", plan: ThreadPlan | None = None,
            augment: str | None = None) -> Path:
    config = load_config(config_path)
    config = config.replace(method={"name": method, "preset": preset}, threshold={"value": threshold},
                            input={"resize": size, "crop": size} if size is not None else {},
                            support={"augment": augment})
    check_config(config, "options")
    if config.threshold.value is not None:  # a TOML value too: refused before any compute
        finite_threshold(config.threshold.value, "threshold")
    refuse_existing_bank(out, force)
    ensure_writable(out)  # before the compute: a read-only --out fails now, not after the fit
    name = config.method.name
    if shots == 0 and not method_class(name).zero_shot:
        raise EdgeFoctError(f"--shots 0: method {name!r} needs at least 1 support image (zero-shot methods: "
                            f"{', '.join(sorted(n for n, c in METHODS.items() if c.zero_shot))})")
    paths = pick_support(list_images(support) if support else [], shots, seed)
    images = [read_image(p) for p in paths]  # all read before anything is written
    cal_paths = [p for p in list_images(calibrate) if p not in set(paths)] if calibrate else []
    if calibrate and not cal_paths:
        raise EdgeFoctError(f"--calibrate {' '.join(calibrate)}: no images outside the support found")
    cal_images = [read_image(p) for p in cal_paths]
    if keep_aspect:
        config = config.replace(input={"aspect": image_aspect(images)})
        check_config(config, "options")  # a quarter-turn --augment does not fit a non-square input
    resolved = resolve_backbone(backbone, download=download)
    bb, _ = load_backbone(resolved.path, engine, plan)
    log.info("backbone %s (%s, %s) on %s", bb.info.backbone_id, resolved.source,
             "pretrained" if bb.info.pretrained else "RANDOM", bb.engine.description)
    bank = fit_bank(bb, images, config, sources=[str(p) for p in paths], foreground=foreground,
                    extra_manifest={"shots": len(paths), "seed": seed, "backbone_source": resolved.source},
                    calibration=cal_images, max_false_alarms=max_false_alarms,
                    calibration_sources=[str(p) for p in cal_paths], progress=True)
    bank.save(out)
    t = bank.manifest["threshold"]
    log.info("bank %s: method %s, %d support images, %d calibration images, threshold %.4g (%s)", out,
             bank.method_name, len(paths), len(cal_paths), t["value"], t["rule"])
    if t.get("warning"):
        log.warning("%s", t["warning"])
    if not bb.info.pretrained:
        log.warning(UNTRAINED_WARNING)
    return out


@click.command("fit", epilog=methods_epilog())
@click.option("--support", "support", multiple=True,
              help="Folder(s) or image file(s) of good parts (repeatable); none with --shots 0.")
@click.option("--backbone", type=click.Path(dir_okay=False), default=None,
              help="Feature ONNX (or a known classification ONNX). Default: see `edge-foct demo --help`.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Bank folder to write (one that holds a bank is replaced only with --force).")
@click.option("--force", is_flag=True, help="Replace the bank already in --out.")
@click.option("--shots", type=click.IntRange(min=0), default=None,
              help=f"Draw this many support images (default: all, at most {DEFAULT_MAX_SHOTS}); 0: text prompts "
                   "only (--method winclip). Fit time and memory grow faster than linearly with it (the "
                   "threshold's leave-out fits): a few to a few dozen suit most parts.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the support draw.")
@click.option("--method", type=METHOD, default=None, help="Method (default from config: patchcore); see below.")
@click.option("--preset", default=None, help=PRESET_HELP)
@click.option("--size", type=INPUT_SIZE, default=None,
              help="Input size (resize = crop = SIZE), a multiple of 16. Default: the graph's fixed size (CLIP: 240), else 256.")
@click.option("--threshold", type=FINITE, default=None, help="Override the learnt threshold (a finite number).")
@click.option("--calibrate", "calibrate", multiple=True,
              help="Folder(s) or files of MORE good parts (not in the memory, no labels): they set the "
                   "threshold. 4-8 help (benchmarks/threshold_rules.md). Support images are skipped.")
@click.option("--max-false-alarms", "max_false_alarms", type=BUDGET, default=None,
              help="A false-alarm budget (e.g. 5% or 0.05): the threshold is set for that rate of good parts.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="TOML config.")
@click.option("--keep-aspect", is_flag=True,
              help="Keep the support images' aspect (short side = --size) instead of squashing them to a square.")
@click.option("--augment", default=None, metavar="SPEC",
              help="Add turned / mirrored copies of the support images to the memory, for parts that arrive "
                   "turned: none, rot90, rot180, flip or a + join (rot90+flip: all 8). Default from config: none. "
                   "The memory and the method's time per image grow with the copies.")
@click.option("--download", is_flag=True,
              help="Allow torchvision to download WideResNet-50-2 ImageNet weights when no --backbone is given.")
@engine_option
@threads_option
def command(support, backbone, out, force, shots, seed, method, preset, size, threshold, calibrate, max_false_alarms,
            config_path, keep_aspect, augment, download, engine, threads) -> None:
    """Learn a memory bank from a few images of good parts."""
    plan = start_threads(threads)
    run_fit(list(support), backbone, out, shots, seed, config_path, method, preset, size, threshold, force=force,
            download=download, keep_aspect=keep_aspect, calibrate=list(calibrate), max_false_alarms=max_false_alarms,
            engine=engine, plan=plan, augment=augment)
