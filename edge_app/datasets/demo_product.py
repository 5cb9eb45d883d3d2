"""Built-in demo product: generated images of a machined part, some with pasted defects.

Written in the MVTec AD layout (``<root>/<category>/train/good``, ``test/good``,
``test/defect``, ``ground_truth/defect/<stem>_mask.png``), so every command that reads a data
set (fit, predict, eval, serve) can run on it on a machine where nothing can be downloaded.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from edge_foct.runtime import atomic

CATEGORY = "demo_part"
SIZE = 256


def _part(rng: np.random.Generator) -> np.ndarray:
    """One normal part: a brushed-metal disc with four holes and a hub, jittered pose/light."""
    s = SIZE
    img = np.full((s, s, 3), 40, np.float32)
    img += rng.normal(0, 3, (s, s, 1))  # background noise
    cx, cy = s / 2 + rng.uniform(-3, 3), s / 2 + rng.uniform(-3, 3)
    angle = rng.uniform(-4, 4)
    disc = np.zeros((s, s), np.uint8)
    cv2.circle(disc, (int(cx), int(cy)), int(s * 0.38), 1, -1)
    brushed = cv2.GaussianBlur(rng.normal(0, 1, (s, s)).astype(np.float32), (0, 0), sigmaX=6, sigmaY=0.6)
    metal = 150 + 18 * brushed / (brushed.std() + 1e-6) + rng.uniform(-8, 8)
    for c, tint in enumerate((1.0, 1.02, 1.05)):
        img[:, :, c] = np.where(disc > 0, metal * tint, img[:, :, c])
    for k in range(4):
        a = np.deg2rad(angle + 45 + 90 * k)
        hx, hy = cx + 0.24 * s * np.cos(a), cy + 0.24 * s * np.sin(a)
        cv2.circle(img, (int(hx), int(hy)), int(s * 0.04), (35, 35, 35), -1, cv2.LINE_AA)
    cv2.circle(img, (int(cx), int(cy)), int(s * 0.09), (95, 95, 100), -1, cv2.LINE_AA)
    cv2.circle(img, (int(cx), int(cy)), int(s * 0.09), (200, 200, 205), 2, cv2.LINE_AA)
    return np.clip(img, 0, 255).astype(np.uint8)


def _defect(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paste one defect on the disc: a scratch, a stain or a dent. Returns (image, mask)."""
    s = SIZE
    out, mask = img.copy(), np.zeros((s, s), np.uint8)
    r = rng.uniform(0.1, 0.3) * s
    a = rng.uniform(0, 2 * np.pi)
    x, y = int(s / 2 + r * np.cos(a)), int(s / 2 + r * np.sin(a))
    kind = rng.integers(3)
    if kind == 0:  # scratch
        dx, dy = rng.normal(0, 1, 2)
        n = np.hypot(dx, dy) + 1e-6
        length = rng.uniform(0.12, 0.25) * s
        p2 = (int(x + dx / n * length), int(y + dy / n * length))
        cv2.line(out, (x, y), p2, (230, 230, 235), 2, cv2.LINE_AA)
        cv2.line(mask, (x, y), p2, 1, 4)
    elif kind == 1:  # stain
        axes = (int(rng.uniform(6, 14)), int(rng.uniform(4, 10)))
        cv2.ellipse(out, (x, y), axes, rng.uniform(0, 180), 0, 360, (70, 60, 45), -1, cv2.LINE_AA)
        cv2.ellipse(mask, (x, y), axes, 0, 0, 360, 1, -1)
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    else:  # dent: dark crescent with a bright rim
        rad = int(rng.uniform(6, 11))
        cv2.circle(out, (x, y), rad, (85, 85, 90), -1, cv2.LINE_AA)
        cv2.circle(out, (x + 2, y + 2), rad, (215, 215, 220), 2, cv2.LINE_AA)
        cv2.circle(mask, (x, y), rad + 3, 1, -1)
    return out, mask.astype(bool)


def write_demo_dataset(root: str | Path, n_train: int = 8, n_good: int = 10, n_defect: int = 10,
                       seed: int = 0) -> Path:
    """Write the demo category under ``root``; returns ``root / CATEGORY``. Idempotent."""
    cat = Path(root) / CATEGORY
    rng = np.random.default_rng(seed)

    def save(rel: str, img: np.ndarray) -> None:
        ok, buf = cv2.imencode(".png", img)
        atomic.write_bytes(cat / rel, buf.tobytes())

    for i in range(n_train):
        save(f"train/good/{i:03d}.png", cv2.cvtColor(_part(rng), cv2.COLOR_RGB2BGR))
    for i in range(n_good):
        save(f"test/good/{i:03d}.png", cv2.cvtColor(_part(rng), cv2.COLOR_RGB2BGR))
    for i in range(n_defect):
        img, mask = _defect(_part(rng), rng)
        save(f"test/defect/{i:03d}.png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        save(f"ground_truth/defect/{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    return cat
