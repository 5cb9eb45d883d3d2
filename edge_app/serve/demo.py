"""The built-in demo stream: a video of good and defective parts, and a bank fitted on two good ones.

From the generated demo product (edge_app/datasets/demo_product.py) by default, or from a real MVTec-layout
category folder (``--data``). Like a production line, the stream is mostly good parts: every good
image but the two support images, and defective ones up to a quarter of that, in a fixed order.
The video is lossless (FFV1): JPEG artefacts alone raise the scores of good parts (MJPG at
OpenCV's quality more than doubled some), so fit a bank on images from the same camera pipeline.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.image_io import list_images, read_image

from edge_foct.edge_app.datasets.demo_product import write_demo_dataset
from edge_foct.edge_app.fitting import pick_support, run_fit

log = logging.getLogger("edge_foct.serve")


SHOTS, SEED = 2, 0


def stream_order(category: Path, seed: int = SEED) -> list[Path]:
    """Good images (not the support ones) and defective ones (at most a quarter as many), shuffled."""
    test, train = category / "test", category / "train" / "good"
    if not train.is_dir() or not test.is_dir():
        raise EdgeFoctError(f"{category}: expected train/good and test/ folders (MVTec layout)")
    support = set(pick_support(list_images([str(train)]), SHOTS, SEED))
    good = [p for p in list_images([str(train), str(test / "good")]) if p not in support]
    bad = [p for d in sorted(q for q in test.iterdir() if q.is_dir() and q.name != "good")
           for p in list_images([str(d)])]
    rng = np.random.default_rng(seed)
    bad = [bad[i] for i in sorted(rng.choice(len(bad), min(len(bad), max(1, len(good) // 4)), replace=False))]
    paths = good + bad
    return [paths[i] for i in rng.permutation(len(paths))]


def write_video(frames: list[np.ndarray], path: Path, size: int, fps: float = 4.0) -> Path:
    """RGB frames (any size) -> a lossless (FFV1) AVI of (size, size) frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (size, size))
    if not writer.isOpened():
        raise EdgeFoctError(f"{path}: this OpenCV build cannot write FFV1 video (needs its FFmpeg backend)")
    try:
        for rgb in frames:
            writer.write(cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (size, size),
                                    interpolation=cv2.INTER_AREA))
    finally:
        writer.release()
    return path


def prepare_demo(out: Path, data: Path | None, backbone: str | None, size: int,
                 method: str | None = None, engine: str = "auto", plan=None) -> tuple[Path, Path]:
    """Write the demo video and fit a 2-shot bank under ``out``; returns (video, bank folder)."""
    category = data if data is not None else write_demo_dataset(out / "data", n_train=8, n_good=24, n_defect=8)
    order = stream_order(category)
    video = write_video([read_image(p) for p in order], out / "demo.avi", size)
    log.info("demo stream %s: %d frames from %s (%d defective)", video, len(order), category,
             sum(p.parent.name != "good" for p in order))
    bank = run_fit([str(category / "train" / "good")], backbone, out / "bank", SHOTS, SEED, None, method,
                   None, size, None, force=True, engine=engine, plan=plan)  # the demo's own folder: refitted each run
    return video, bank
