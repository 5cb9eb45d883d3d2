"""Open a bank with its backbone and build the Inspector: shared by predict, demo and serve.

Two start-up decisions, each made once by ``decide_serving`` (``edge-foct doctor`` prints the same
one) and logged in one line: the backbone engine (runtime/engines/choose.py: TensorRT engines built
from this backbone > ONNX Runtime CUDA > OpenVINO on an x86 CPU > ONNX Runtime CPU) and the compute
backend of the transport maths (runtime/compute_backend.py: CUDA kernels or the NumPy reference).
The engine is opened with the command's thread plan (runtime/threads.py, applied by the command).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edge_foct.runtime.backbone import Backbone, file_sha256
from edge_foct.runtime.bank import Bank
from edge_foct.runtime.compute_backend import Backend, decide, make_backend, with_engine_distances
from edge_foct.runtime.engines.choose import EngineChoice, choose_engine, open_engine
from edge_foct.runtime.errors import BackboneError
from edge_foct.runtime.pipeline import Inspector
from edge_foct.runtime.preprocess import Preprocessor
from edge_foct.runtime.threads import ThreadPlan

from edge_foct.edge_app.backbones import UNTRAINED_WARNING, as_feature_graph

log = logging.getLogger("edge_foct")


@dataclass(frozen=True)
class ServingChoice:
    """The backbone engine and the compute backend ("numpy" | "cuda", with the reason)."""

    engine: EngineChoice
    compute: str
    compute_reason: str


def decide_serving(feature_graph: Path | None, engine_dir: str | os.PathLike | None = None,
                   engine: str = "auto", compute: str = "auto") -> ServingChoice:
    """Which engine runs ``feature_graph`` and which backend runs the transport maths, on this machine.

    engine_dir: a folder from `edge-foct build-engines`; TensorRT is taken only when it holds an engine
    built from ``feature_graph`` (matched by sha256; None: that match is not checked). engine:
    "auto" | "tensorrt" | "cuda" | "openvino[:f32|:bf16]" | "cpu"; compute: "auto" | "numpy" | "cuda"
    (GpuError when the asked path is not here)."""
    sha = file_sha256(feature_graph) if engine_dir is not None and feature_graph is not None else None
    return ServingChoice(choose_engine(engine_dir, engine, sha, feature_graph), *decide(compute))


def bank_feature_graph(bank: Bank, backbone: str | None = None) -> Path:
    """The feature graph the bank's features came from (``backbone``: the same model at another path)."""
    path = Path(backbone) if backbone else Path(bank.manifest["backbone"]["path"])
    if not path.is_file():
        raise BackboneError(f"the bank's backbone {path} is missing; pass --backbone FILE "
                            f"(the same model, sha256 {bank.manifest['backbone']['sha256'][:12]})")
    return as_feature_graph(path)


def open_backbone(graph: Path, engine: EngineChoice, plan: ThreadPlan | None = None) -> Backbone:
    """The feature graph on the chosen engine (TensorRT: the engine built from it), with the plan's threads."""
    return Backbone.from_engine(open_engine(engine, graph, plan), graph)


def load_backbone(graph: Path, engine: str = "auto",
                  plan: ThreadPlan | None = None) -> tuple[Backbone, EngineChoice]:
    """fit, eval and bench: the start-up engine decision for ``graph`` (no TensorRT folder), logged."""
    choice = choose_engine(None, engine, graph=graph)
    log.info("backbone engine: %s", choice.describe())
    return open_backbone(graph, choice, plan), choice


@dataclass
class Session:
    bank: Bank
    backbone: Backbone
    inspector: Inspector
    warning: str | None  # set when the backbone is untrained: shown on every result
    compute: Backend  # what the method's transport maths runs on (a re-made method gets it too)


def open_session(bank_dir: str | Path, backbone: str | None = None, threshold: float | None = None,
                 online: bool = True, engine_dir: str | os.PathLike | None = None, engine: str = "auto",
                 compute: str = "auto", plan: ThreadPlan | None = None) -> Session:
    bank = Bank.load(bank_dir)
    graph = bank_feature_graph(bank, backbone)
    choice = decide_serving(graph, engine_dir, engine, compute)
    log.info("backbone engine: %s", choice.engine.describe())
    bb = open_backbone(graph, choice.engine, plan)
    bank.check_backbone(bb.info)
    backend = with_engine_distances(make_backend(choice.compute, choice.compute_reason), bb.engine)
    log.info("compute backend: %s", backend.description)
    resize, crop = bank.input_size
    method = bank.make_method()
    method.use_backend(backend)
    thr = bank.threshold if threshold is None else float(threshold)
    inspector = Inspector(bb, Preprocessor(resize, crop, bank.input_aspect, stride=bb.info.feature_stride), method,
                          thr, online=online and method.online)
    warning = None if bb.info.pretrained else UNTRAINED_WARNING
    log.info("bank %s: method %s, threshold %.4g (%s), backbone %s on %s, online %s", bank_dir,
             bank.method_name, thr, "override" if threshold is not None else bank.manifest["threshold"]["rule"],
             bb.info.backbone_id, bb.engine.description, inspector.online)
    return Session(bank, bb, inspector, warning, backend)
