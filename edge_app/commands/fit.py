"""``edge-foct fit``: support images -> memory bank folder."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from edge_foct.edge_app.commands.options import INPUT_SIZE, METHOD, PRESET_HELP, methods_epilog
from edge_foct.edge_app.commands.run_options import (engine_option, open_segmenter, segmenter_option, start_threads,
                                                     threads_option)
from edge_foct.edge_app.commands.value_types import BUDGET, FINITE
from edge_foct.edge_app.fitting import DEFAULT_MAX_SHOTS, run_fit

log = logging.getLogger("edge_foct.fit")


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
              help="A false-alarm budget (e.g. 5% or 0.05): the learnt threshold is moved for that rate of good "
                   "parts (held on average over products, not per product: benchmarks/threshold_rules.md).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help="TOML config.")
@click.option("--keep-aspect", is_flag=True,
              help="Keep the support images' aspect (short side = --size) instead of squashing them to a square.")
@click.option("--augment", default=None, metavar="SPEC",
              help="Add turned / mirrored copies of the support images to the memory, for parts that arrive "
                   "turned: none, rot90, rot180, flip or a + join (rot90+flip: all 8). Default from config: none. "
                   "The memory and the method's time per image grow with the copies.")
@click.option("--download", is_flag=True,
              help="Allow torchvision to download WideResNet-50-2 ImageNet weights when no --backbone is given.")
@segmenter_option
@engine_option
@threads_option
def command(support, backbone, out, force, shots, seed, method, preset, size, threshold, calibrate, max_false_alarms,
            config_path, keep_aspect, augment, download, segmenter, engine, threads) -> None:
    """Learn a memory bank from a few images of good parts."""
    plan = start_threads(threads)
    foreground = open_segmenter(segmenter)
    run_fit(list(support), backbone, out, shots, seed, config_path, method, preset, size, threshold,
            foreground=foreground, force=force,
            download=download, keep_aspect=keep_aspect, calibrate=list(calibrate), max_false_alarms=max_false_alarms,
            engine=engine, plan=plan, augment=augment)
