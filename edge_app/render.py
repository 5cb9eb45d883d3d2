"""Turn an Inspection into pictures: a 16-bit map PNG and a colour overlay.

Fixed scale, no per-image or test-set normalisation: in the 16-bit map, 16384 is the threshold
(value = score / threshold * 16384, clipped to 65535); in the overlay, only pixels above the
threshold are tinted, yellow at the threshold to red at 2 x threshold, in every frame alike: a good
frame shows the part untinted, a defect shows where it is and how far above the threshold.
"""

from __future__ import annotations

import cv2
import numpy as np

MAP_UNIT = 16384.0  # 16-bit map value at the threshold (4x headroom above it)


def _fail_closed(amap: np.ndarray, threshold: float) -> np.ndarray:
    """Non-finite map values (a NaN score is a defect) drawn as the top of the scale."""
    return np.where(np.isfinite(amap), amap, 4.0 * threshold) if not np.isfinite(amap).all() else amap


def map_png16(amap: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) float32 -> (H, W) uint16."""
    amap = _fail_closed(amap, threshold)
    return np.clip(amap / max(threshold, 1e-12) * MAP_UNIT, 0, 65535).astype(np.uint16)


def overlay_bgr(crop_rgb: np.ndarray, amap: np.ndarray, threshold: float, score: float,
                defective: bool, warning: str | None = None) -> np.ndarray:
    """crop (H, W, 3) RGB uint8 + map (H, W) -> (H, W, 3) BGR uint8 with the verdict written on it."""
    amap = _fail_closed(amap, threshold)
    rel = amap / max(threshold, 1e-12)  # (H, W): 1 at the threshold
    above = np.clip(rel - 1.0, 0.0, 1.0)[:, :, None]  # 0 at the threshold .. 1 at twice it
    heat = np.concatenate([np.zeros_like(above), 255.0 * (1.0 - above), np.full_like(above, 255.0)], axis=2)  # BGR
    base = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2BGR).astype(np.float32)
    alpha = np.where(rel > 1.0, 0.35 + 0.35 * above[:, :, 0], 0.0)[:, :, None]  # no tint at or below it
    out = (base * (1 - alpha) + heat * alpha).astype(np.uint8)
    colour = (0, 0, 255) if defective else (0, 180, 0)
    text = f"{'DEFECT' if defective else 'OK'} {score:.3g}/{threshold:.3g}"
    cv2.putText(out, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    if warning:
        cv2.putText(out, "untrained backbone", (4, out.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 255, 255), 1, cv2.LINE_AA)
    return out


def encode_png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
