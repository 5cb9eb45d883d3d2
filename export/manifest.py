"""Shared export helpers: torch -> ONNX with one exporter, the parity check, and the manifest.

Every graph goes through ``export_torch`` (legacy TorchScript exporter, see ``EXPORTER``), is
checked by ``onnx.checker`` and by ``check_parity`` (ONNX Runtime against torch on the same feeds,
with an explicit tolerance), and is recorded by ``record_graph`` in ``manifest.json`` beside it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from edge_foct import __version__
from edge_foct.runtime import atomic
from edge_foct.runtime.backbone import file_sha256
from edge_foct.runtime.engines import OrtEngine
from edge_foct.runtime.errors import EdgeFoctError

#: torch.onnx.export(dynamo=False) for every graph. On torch 2.14.1 the dynamo exporter also
#: produced correct WRN and SAM graphs here, but took 24 s instead of 6.5 s for WRN on 2 cores and
#: needs torch.export Dim constraints (H = 16 k) for the dynamic sizes. Our SAM decoder wrapper
#: (prompt embeddings precomputed as buffers) exported with both.
EXPORTER = "torch.onnx legacy TorchScript exporter (dynamo=False)"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


class ExportError(EdgeFoctError):
    """An export that failed its checks, or inputs (weights, checkpoints) that cannot be used."""


@dataclass(frozen=True)
class ParityReport:
    """ONNX Runtime vs torch on one set of feeds: pass iff |ort - torch| <= atol + rtol * |torch|."""

    output: str
    shape: tuple[int, ...]
    max_abs_err: float
    max_abs_ref: float
    rtol: float
    atol: float
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "shape": list(self.shape)}


def check_parity(torch_fn: Callable[..., Any], onnx_path: str | os.PathLike, feeds: dict[str, np.ndarray],
                 rtol: float, atol: float) -> list[ParityReport]:
    """Run ``torch_fn(*feeds.values())`` and the ONNX graph in ONNX Runtime (the runtime's own
    ``OrtEngine``, CPU); compare every output in graph order. Raises ExportError on a mismatch."""
    engine = OrtEngine(onnx_path)
    got = engine.run(feeds)
    with torch.no_grad():
        ref = torch_fn(*(torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()))
    refs = ref if isinstance(ref, (tuple, list)) else (ref,)
    if len(refs) != len(engine.outputs):
        raise ExportError(f"{onnx_path}: {len(engine.outputs)} graph outputs, torch gives {len(refs)}")
    reports = []
    for spec, r in zip(engine.outputs, refs):
        r = r.detach().float().numpy()
        g = got[spec.name].astype(np.float32)
        if g.shape != r.shape:
            raise ExportError(f"{onnx_path}: output {spec.name!r} has shape {g.shape}, torch gives {r.shape}")
        err = np.abs(g - r)
        ok = bool(np.all(err <= atol + rtol * np.abs(r)))
        reports.append(ParityReport(spec.name, tuple(r.shape), float(err.max(initial=0.0)),
                                    float(np.abs(r).max(initial=0.0)), rtol, atol, ok))
    bad = [p for p in reports if not p.ok]
    if bad:
        p = bad[0]
        raise ExportError(f"{onnx_path}: ONNX Runtime differs from torch on {p.output!r}: max |err| "
                          f"{p.max_abs_err:.3g} > atol {atol:g} + rtol {rtol:g} * |ref| "
                          f"(max |ref| {p.max_abs_ref:.3g})")
    return reports


def export_torch(module: torch.nn.Module, args: tuple[torch.Tensor, ...], dst: str | os.PathLike,
                 input_names: list[str], output_names: list[str], dynamic_axes: dict[str, dict[int, str]],
                 opset: int, metadata: Callable[[onnx.ModelProto], None]) -> Path:
    """Export ``module`` at ``dst`` (atomically), let ``metadata(model)`` annotate it, run the checker.

    Graphs over protobuf's 2 GiB limit (SAM vit_h's encoder) keep their weights in ``dst.data``.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=f".{dst.name}.") as tmp:
        raw = Path(tmp) / "graph.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # the legacy exporter is deprecated upstream; choosing it is deliberate (EXPORTER above)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript-based ONNX")
            torch.onnx.export(module, args, str(raw), dynamo=False, opset_version=opset,
                              input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
        large = any(p != raw for p in Path(tmp).iterdir())  # the exporter spilled weights to files
        model = onnx.load(str(raw))
        metadata(model)
        if large:
            data = f"{dst.name}.data"
            onnx.save_model(model, str(Path(tmp) / dst.name), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=data)
            os.replace(Path(tmp) / data, dst.parent / data)
            os.replace(Path(tmp) / dst.name, dst)
        else:
            atomic.write_bytes(dst, model.SerializeToString())
    onnx.checker.check_model(str(dst))  # path form: works for graphs with external data too
    return dst


def set_graph_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    """Replace the model's metadata_props with ``values`` (non-backbone graphs)."""
    del model.metadata_props[:]
    for k, v in values.items():
        model.metadata_props.add(key=k, value=str(v))


def graph_files(path: Path) -> dict[str, str]:
    """sha256 of the ONNX file and of every external-data file it references, by file name."""
    model = onnx.load(str(path), load_external_data=False)
    files = {path.name}
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            files.update(e.value for e in t.external_data if e.key == "location")
    return {f: file_sha256(path.parent / f) for f in sorted(files)}


def io_specs(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Input and output names, dtypes and shapes (a str dimension is dynamic), as ONNX Runtime sees them."""
    engine = OrtEngine(path)
    spec = lambda t: {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}  # noqa: E731
    return {"inputs": [spec(t) for t in engine.inputs], "outputs": [spec(t) for t in engine.outputs]}


def versions() -> dict[str, str]:
    import onnxruntime

    out = {"edge_foct": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
           "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}
    for mod in ("torchvision", "segment_anything"):
        try:
            out[mod] = getattr(__import__(mod), "__version__", "unknown")
        except ImportError:
            pass
    return out


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "graphs": {}}
    data = json.loads(path.read_text())
    if data.get("format") != MANIFEST_FORMAT:
        raise ExportError(f"{path}: manifest format {data.get('format')!r}, expected {MANIFEST_FORMAT}; "
                          f"export into an empty folder")
    return data


def record_graph(out_dir: str | os.PathLike, key: str, path: Path, opset: int, config: dict[str, Any],
                 parity: list[ParityReport], extra_files: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Add (or replace) graph ``key`` in ``out_dir/manifest.json``; other graphs are kept."""
    manifest = read_manifest(out_dir)
    files = graph_files(path)
    files.update({p.name: file_sha256(p) for p in extra_files})
    manifest["graphs"][key] = {
        "file": path.name, "sha256": files, **io_specs(path), "config": config,
        "exporter": EXPORTER, "opset": opset, "versions": versions(),
        "parity": [p.to_json() for p in parity],
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic.write_json(Path(out_dir) / MANIFEST, manifest)
    return manifest["graphs"][key]
