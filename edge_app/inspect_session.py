"""Open a bank with its backbone and build the Inspector: shared by predict, demo and serve."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.bank import Bank
from edge_foct.runtime.errors import BackboneError
from edge_foct.runtime.pipeline import Inspector
from edge_foct.runtime.preprocess import Preprocessor

from .backbones import UNTRAINED_WARNING, as_feature_graph

log = logging.getLogger("edge_foct")


@dataclass
class Session:
    bank: Bank
    backbone: Backbone
    inspector: Inspector
    warning: str | None  # set when the backbone is untrained: shown on every result


def open_session(bank_dir: str | Path, backbone: str | None = None, threshold: float | None = None,
                 online: bool = True, providers: list[str] | None = None) -> Session:
    bank = Bank.load(bank_dir)
    path = Path(backbone) if backbone else Path(bank.manifest["backbone"]["path"])
    if not path.is_file():
        raise BackboneError(f"the bank's backbone {path} is missing; pass --backbone FILE "
                            f"(the same model, sha256 {bank.manifest['backbone']['sha256'][:12]})")
    bb = Backbone.load(as_feature_graph(path), providers=providers)
    bank.check_backbone(bb.info)
    resize, crop = bank.input_size
    method = bank.make_method()
    thr = bank.threshold if threshold is None else float(threshold)
    inspector = Inspector(bb, Preprocessor(resize, crop), method, thr, online=online and method.online)
    warning = None if bb.info.pretrained else UNTRAINED_WARNING
    log.info("bank %s: method %s, threshold %.4g (%s), backbone %s on %s, online %s", bank_dir,
             bank.method_name, thr, "override" if threshold is not None else bank.manifest["threshold"]["rule"],
             bb.info.backbone_id, bb.engine.description, inspector.online)
    return Session(bank, bb, inspector, warning)
