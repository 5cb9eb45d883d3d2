"""Image loading: 8/16-bit, grey or colour (with or without alpha) -> RGB uint8, up to a pixel budget.

The budget (``max_pixels``, default ``MAX_PIXELS`` or ``$EDGE_FOCT_MAX_PIXELS``) is checked on the
file's header (Pillow reads the size without decoding) before OpenCV decodes it: a 16000 x 16000
PNG of zeros is 730 KB on disk and 768 MB decoded, so anyone who can drop a file in a watched folder
could otherwise exhaust an edge box. Formats Pillow cannot identify are checked right after decoding.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: default pixel budget per image: 40 M pixels (e.g. 7300 x 5475; a 36 MP 6000 x 6000 camera fits).
#: Every method resizes to the network input (256-336 px), so more pixels add nothing but memory.
MAX_PIXELS = 40_000_000
MAX_PIXELS_ENV = "EDGE_FOCT_MAX_PIXELS"


def pixel_budget() -> int:
    """``$EDGE_FOCT_MAX_PIXELS`` when set (a positive integer), else ``MAX_PIXELS``."""
    env = os.environ.get(MAX_PIXELS_ENV)
    if env is None:
        return MAX_PIXELS
    try:
        value = int(env)
    except ValueError:
        value = 0
    if value < 1:
        raise ImageError(f"${MAX_PIXELS_ENV}={env!r}: give a positive number of pixels, e.g. 40000000")
    return value


def _over_budget(path: Path, w: int | None, h: int | None, budget: int, pixels: int | None = None) -> ImageError:
    size = (f"{w}x{h} ({w * h / 1e6:.0f} M pixels)" if w and h else
            f"{pixels / 1e6:.0f} M pixels" if pixels else "beyond Pillow's decompression-bomb limit")
    return ImageError(f"{path}: image is {size}, over the {budget / 1e6:.0f} M-pixel budget; downscale it, "
                      f"or raise ${MAX_PIXELS_ENV}")


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file header, without decoding; None when Pillow does not know the format.
    Raises ImageError for a file too large even to identify safely (Pillow's bomb check)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size
    except Image.DecompressionBombError as e:  # Pillow stops before giving the size: its message has the count
        m = re.search(r"\((\d+) pixels\)", str(e))
        raise _over_budget(path, None, None, pixel_budget(), int(m.group(1)) if m else None) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def to_rgb8(img: np.ndarray, *, bgr: bool = True, source: str = "frame") -> np.ndarray:
    """Convert a decoded image to RGB uint8.

    img: (H, W) or (H, W, 1|3|4), uint8 / uint16 / float in [0, 1]. ``bgr`` says whether a
    3/4-channel input is in OpenCV's BGR order. Returns (H, W, 3) uint8 RGB, C-contiguous.
    """
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise ImageError(f"{source}: unsupported image shape {img.shape}; expected grey, RGB or RGBA")
    if img.shape[0] < 8 or img.shape[1] < 8:
        raise ImageError(f"{source}: image is {img.shape[1]}x{img.shape[0]} pixels; need at least 8x8")
    if img.dtype == np.uint16:
        img = (img.astype(np.uint32) * 255 + 32767) // 65535  # 16-bit -> 8-bit, rounded
        img = img.astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(np.nan_to_num(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"{source}: unsupported pixel type {img.dtype}; expected 8- or 16-bit")
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    code = {(True, 3): cv2.COLOR_BGR2RGB, (True, 4): cv2.COLOR_BGRA2RGB,
            (False, 3): None, (False, 4): cv2.COLOR_RGBA2RGB}[(bgr, img.shape[2])]
    return np.ascontiguousarray(img if code is None else cv2.cvtColor(img, code))


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file -> (H, W, 3) uint8 RGB. Raises ImageError with the path on failure, and for
    an image over ``max_pixels`` (default: ``pixel_budget()``) before decoding it."""
    path = Path(path)
    budget = pixel_budget() if max_pixels is None else max_pixels
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    if data.size == 0:
        raise ImageError(f"{path}: file is empty")
    wh = header_size(path)
    if wh is not None and wh[0] * wh[1] > budget:
        raise _over_budget(path, wh[0], wh[1], budget)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"{path}: not a decodable image (corrupt or unsupported format)")
    if img.shape[0] * img.shape[1] > budget:
        raise _over_budget(path, img.shape[1], img.shape[0], budget)
    return to_rgb8(img, bgr=True, source=str(path))


def read_mask(path: str | os.PathLike, nonzero: bool = False) -> np.ndarray:
    """Read a ground-truth or foreground mask -> (H, W) bool: pixel > 127 of the first channel (half
    range for 16-bit), or with ``nonzero`` any non-zero pixel (label masks such as VisA's)."""
    path = Path(path)
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageError(f"{path}: not a decodable mask image")
    if img.ndim == 3:
        img = img[:, :, 0]
    if nonzero:
        return img != 0
    if img.dtype == np.uint16:
        return img > 32767
    return img > 127


def list_images(paths: list[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Expand files and folders (non-recursive, sorted) into a list of image paths."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES))
        elif p.exists():
            out.append(p)
        else:
            raise ImageError(f"{p}: no such file or folder")
    return out
