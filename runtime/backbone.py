"""Backbone: an engine that maps images to patch features, with its identity for the bank."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import names
from .engines import Engine, OrtEngine
from .errors import BackboneError

log = logging.getLogger(__name__)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class BackboneInfo:
    """What a bank records about the backbone that made its features."""

    backbone_id: str
    sha256: str
    feature_dim: int
    pretrained: bool
    path: str

    def to_json(self) -> dict:
        return {"id": self.backbone_id, "sha256": self.sha256, "feature_dim": self.feature_dim,
                "pretrained": self.pretrained, "path": self.path}


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
        )

    def features(self, x: np.ndarray) -> np.ndarray:
        """x (N, 3, H, W) float32 -> (N, H/8, W/8, D) float32."""
        return self.engine.run({names.BACKBONE_INPUT: x})[names.BACKBONE_OUTPUT]
