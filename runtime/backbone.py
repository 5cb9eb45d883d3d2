"""Backbone: an engine that maps images to patch features, with its identity for the bank."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import names
from .engines import Engine, OrtEngine
from .errors import BackboneError
from .hashing import file_sha256  # noqa: F401  (re-exported: callers import it from here)
from .preprocess import Preprocessor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneInfo:
    """What a bank records about the backbone that made its features."""

    backbone_id: str
    sha256: str
    feature_dim: int
    pretrained: bool
    path: str
    feature_stride: int = names.FEATURE_STRIDE  # input pixels per patch (16 for a ViT-B/16)
    side_data: str | None = None  # file beside the graph with arrays the methods need (CLIP text)

    def to_json(self) -> dict:
        return {"id": self.backbone_id, "sha256": self.sha256, "feature_dim": self.feature_dim,
                "pretrained": self.pretrained, "path": self.path, "feature_stride": self.feature_stride,
                **({"side_data": self.side_data} if self.side_data else {})}


class Backbone:
    """Wraps an engine whose graph follows the feature contract in ``names``.

    ``features(x)``: x (N, 3, H, W) float32 -> (N, H/8, W/8, D) float32.
    """

    def __init__(self, engine: Engine, info: BackboneInfo) -> None:
        self.engine = engine
        self.info = info

    @classmethod
    def load(cls, path: str | os.PathLike, providers: list[str] | None = None,
             threads: int | None = None) -> "Backbone":
        path = Path(path)
        engine = OrtEngine(path, providers=providers, threads=threads)
        return cls(engine, cls.check_contract(engine, path))

    @classmethod
    def from_engine(cls, engine: Engine, path: str | os.PathLike) -> "Backbone":
        """Any engine (runtime/engines/choose.py: ``open_engine``) running the feature graph ``path``."""
        return cls(engine, cls.check_contract(engine, Path(path)))

    @staticmethod
    def check_contract(engine: Engine, path: Path) -> BackboneInfo:
        meta = engine.metadata
        in_names = [t.name for t in engine.inputs]
        out_names = [t.name for t in engine.outputs]
        if names.BACKBONE_INPUT not in in_names or names.BACKBONE_OUTPUT not in out_names:
            raise BackboneError(
                f"{path}: not an edge-foct feature graph (inputs {in_names}, outputs {out_names}); "
                f"make one with `edge-foct export` or `edge-foct prepare-backbone`")
        if meta.get(names.META_FORMAT) != names.FEATURE_FORMAT_VERSION:
            raise BackboneError(f"{path}: feature format {meta.get(names.META_FORMAT)!r}, this runtime reads "
                                f"{names.FEATURE_FORMAT_VERSION!r}; re-export the backbone")
        return BackboneInfo(
            backbone_id=meta.get(names.META_BACKBONE_ID, path.stem),
            sha256=file_sha256(path),
            feature_dim=int(meta[names.META_FEATURE_DIM]),
            pretrained=meta.get(names.META_PRETRAINED, "false") == "true",
            path=str(path.resolve()),
            feature_stride=int(meta.get(names.META_FEATURE_STRIDE, names.FEATURE_STRIDE)),
            side_data=meta.get(names.META_SIDE_DATA),
        )

    def side_arrays(self) -> dict[str, np.ndarray]:
        """The arrays shipped beside the graph (its side data; {} when it has none), checked to belong
        to this graph. What ``SupportSet.context`` carries to the methods (WinCLIP's text embeddings)."""
        if not self.info.side_data:
            return {}
        path = Path(self.info.path).parent / self.info.side_data
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise BackboneError(f"{path}: the side data of {self.info.path} is missing or unreadable ({e}); "
                                f"re-export the graph and its side data together") from None
        owner = str(arrays.pop(names.CLIP_GRAPH_SHA256, ""))
        if owner != self.info.sha256:
            raise BackboneError(f"{path}: side data of another graph (sha256 {owner[:12]}, this graph "
                                f"{self.info.sha256[:12]}); re-export the graph and its side data together")
        return arrays

    @property
    def fixed_size(self) -> int | None:
        """The input size a graph with a fixed input (a ViT's positional embeddings) takes; None: any."""
        spec = next(t for t in self.engine.inputs if t.name == names.BACKBONE_INPUT)
        return spec.shape[-1] if isinstance(spec.shape[-1], int) else None

    def preprocessor(self, resize: int | None, crop: int | None, default: int = 256,
                     aspect: float = 1.0) -> Preprocessor:
        """The Preprocessor for this backbone: its stride; crop None: its fixed size, else ``default``;
        resize None: the crop; ``aspect`` width / height (1: square). A crop or aspect that a
        fixed-size graph cannot take is a one-line error."""
        crop = crop or self.fixed_size or default
        if self.fixed_size is not None and (crop != self.fixed_size or aspect != 1.0):
            asked = f"{crop}" if aspect == 1.0 else f"{crop} at aspect {aspect} (no --keep-aspect)"
            raise BackboneError(f"{self.info.backbone_id} takes {self.fixed_size}x{self.fixed_size} input only, "
                                f"not {asked}: pass --size {self.fixed_size}")
        try:
            return Preprocessor(resize or crop, crop, aspect, stride=self.info.feature_stride)
        except ValueError as e:
            raise BackboneError(f"input size: {e}") from None

    def features(self, x: np.ndarray, *, copy: bool = True) -> np.ndarray:
        """x (N, 3, H, W) float32 -> (N, H/8, W/8, D) float32. ``copy=False``: may be the engine's own
        buffer, valid until the next call (runtime/engines/base.py); for a caller done with it by then."""
        if copy:
            return self.engine.run({names.BACKBONE_INPUT: x})[names.BACKBONE_OUTPUT]
        return self.engine.run({names.BACKBONE_INPUT: x}, copy=False)[names.BACKBONE_OUTPUT]
