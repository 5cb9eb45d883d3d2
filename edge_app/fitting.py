"""Support images on disk -> a saved bank: the file side of ``runtime.fit.fit_bank`` (fit, demo, serve --demo)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_foct.edge_app.backbones import UNTRAINED_WARNING, resolve_backbone
from edge_foct.edge_app.inspect_session import load_backbone
from edge_foct.edge_app.out_dir import ensure_writable, refuse_existing_bank
from edge_foct.runtime.config import check_config, load_config
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.fit import fit_bank
from edge_foct.runtime.image_io import list_images, read_image
from edge_foct.runtime.methods import METHODS, method_class
from edge_foct.runtime.preprocess import image_aspect
from edge_foct.runtime.threads import ThreadPlan
from edge_foct.runtime.threshold import finite_threshold

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
