"""ONNX graphs -> TensorRT engines, built on the target device (Jetson / RTX) with the Python builder.

For every ``*.onnx`` in a folder (the output of ``edge-foct export`` or ``prepare-backbone``):
one optimisation profile over its dynamic dims (batch 1..max_batch, height/width over the input
sizes, navigator pairs 1..max_pairs), an optional FP16 flag, and for feature graphs an optional
INT8 flag with an entropy calibrator fed from real images through the runtime's own preprocessing.
One timing cache file is shared by all builds (later builds reuse its tactic timings). The
manifest (runtime/engine_manifest.py) records TensorRT version, GPU, compute capability and
precision; the equivalent ``trtexec`` command of every engine is printed and recorded.
"""

from __future__ import annotations

import datetime as dt
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from .onnx_io import load_onnx

from edge_foct.runtime import atomic, names
from edge_foct.runtime.backbone import file_sha256
from edge_foct.runtime.engine_manifest import ENGINE_MANIFEST, ENGINE_MANIFEST_FORMAT, this_machine
from edge_foct.runtime.engines import TensorSpec
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.image_io import list_images, read_image
from edge_foct.runtime.preprocess import Preprocessor

log = logging.getLogger(__name__)

TIMING_CACHE = "timing.cache"
CALIB_SUFFIX = ".int8-calibration.cache"  # one per calibrated engine: scales belong to one network
Shape = tuple[int, ...]


class TensorRTMissing(EdgeFoctError):
    """TensorRT (or a CUDA GPU) is not available on this machine."""


@dataclass(frozen=True)
class BuildOptions:
    fp16: bool = False
    int8: bool = False
    calib: tuple[Path, ...] = ()  # images or folders of good images from the camera (INT8 only)
    sizes: tuple[int, ...] = (256, 336)  # input sizes the backbone must accept (PatchCore+, FOCT)
    opt_size: int | None = None  # the size TensorRT tunes for; default: the largest
    max_batch: int = 4
    opt_pairs: int = 16384  # navigator (memory, query) pairs per call
    max_pairs: int = 65536  # x 1024 floats = 256 MiB of input
    workspace_mib: int = 2048

    def __post_init__(self) -> None:
        if self.int8 and not self.calib:
            raise EdgeFoctError("--int8 needs --calib IMAGES: a folder of 50-500 good images from the camera")
        if any(s % 16 for s in self.sizes) or not self.sizes:
            raise EdgeFoctError(f"--sizes {self.sizes}: every size must be a multiple of 16")

    @property
    def opt(self) -> int:
        return self.opt_size or max(self.sizes)

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"


@dataclass(frozen=True)
class EnginePlan:
    """One engine to build: its profile (dynamic inputs only) and precision flags."""

    key: str
    onnx: Path
    engine: Path
    profile: dict[str, tuple[Shape, Shape, Shape]]
    fp16: bool
    int8: bool  # INT8 with calibration: feature graphs only (the calibrator feeds images)
    calib_size: int = 0  # the calibration images' size: the profile's opt size, or a fixed-size graph's own

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"

    @property
    def calib_cache(self) -> Path | None:
        return self.engine.with_name(self.key + CALIB_SUFFIX) if self.int8 else None

    def trtexec(self, timing_cache: Path) -> str:
        """The equivalent trtexec command (with --int8 it reads the calibration cache a build wrote)."""
        dims = lambda s: "x".join(map(str, s))  # noqa: E731
        args = ["trtexec", f"--onnx={self.onnx}", f"--saveEngine={self.engine}", f"--timingCacheFile={timing_cache}"]
        args += ["--fp16"] if self.fp16 else []
        args += ["--int8", f"--calib={self.calib_cache}"] if self.int8 else []
        for flag, i in (("min", 0), ("opt", 1), ("max", 2)):
            if self.profile:
                args.append(f"--{flag}Shapes=" + ",".join(f"{n}:{dims(r[i])}" for n, r in self.profile.items()))
        return shlex.join(args)


def dim_range(label: str, opts: BuildOptions) -> tuple[int, int, int]:
    """(min, opt, max) of one dynamic dimension, by the name the exporters give it."""
    if label == "batch":
        return 1, 1, opts.max_batch
    if label in ("height", "width"):
        return min(opts.sizes), opts.opt, max(opts.sizes)
    if label == "pairs":
        return 1, opts.opt_pairs, opts.max_pairs
    raise EdgeFoctError(f"dynamic dimension {label!r} has no profile rule (batch, height, width, pairs); "
                        f"export the graph with named dims")


def input_profile(spec: TensorSpec, opts: BuildOptions) -> tuple[Shape, Shape, Shape] | None:
    """(min, opt, max) shapes of a graph input; None when the input is static."""
    if all(isinstance(d, int) for d in spec.shape):
        return None
    ranges = [(d, d, d) if isinstance(d, int) else dim_range(d, opts) for d in spec.shape]
    return tuple(tuple(r[i] for r in ranges) for i in range(3))  # type: ignore[return-value]


def graph_io(path: Path) -> tuple[list[TensorSpec], list[str]]:
    """Graph inputs (a str dim is dynamic) and output names, read without loading the weights
    (a SAM vit_h encoder is 2.5 GB); no torch, so this runs on a device without the export extra."""
    graph = load_onnx(path, load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    dim = lambda d: d.dim_param if d.HasField("dim_param") else int(d.dim_value)  # noqa: E731
    inputs = [TensorSpec(i.name, "float32", tuple(dim(d) for d in i.type.tensor_type.shape.dim))
              for i in graph.input if i.name not in inits]
    return inputs, [o.name for o in graph.output]


def graph_metadata(path: Path) -> dict[str, str]:
    """The graph's metadata_props (backbone id, feature format, ...), read without the weights: the
    engine manifest carries them, since a serialized engine keeps none (TrtEngine.metadata)."""
    return {p.key: p.value for p in load_onnx(path, load_external_data=False).metadata_props}


def plan_engines(onnx_dir: Path, out_dir: Path, opts: BuildOptions) -> list[EnginePlan]:
    """One plan per ``*.onnx`` in ``onnx_dir`` (no TensorRT needed: the plans also give trtexec commands)."""
    paths = sorted(Path(onnx_dir).glob("*.onnx"))
    if not paths:
        raise EdgeFoctError(f"--onnx-dir {onnx_dir}: no .onnx files; run `edge-foct export --out {onnx_dir}` first")
    plans = []
    for p in paths:
        inputs, outputs = graph_io(p)
        profile = {t.name: r for t in inputs if (r := input_profile(t, opts)) is not None}
        feature_graph = names.BACKBONE_OUTPUT in outputs  # INT8 calibration feeds images
        image = next((t for t in inputs if t.name == names.BACKBONE_INPUT), None)
        fixed = image is not None and isinstance(image.shape[-1], int)  # a ViT (CLIP): one input size
        plans.append(EnginePlan(p.stem, p.resolve(), (out_dir / f"{p.stem}.engine").resolve(), profile,
                                fp16=opts.fp16, int8=opts.int8 and feature_graph,
                                calib_size=int(image.shape[-1]) if fixed else opts.opt))
    return plans


def calibration_batches(paths: tuple[Path, ...], size: int) -> list[np.ndarray]:
    """Calibration images -> (1, 3, size, size) float32 batches, preprocessed like the runtime does."""
    pre = Preprocessor(size, size)
    files = list_images(list(paths))
    if not files:
        raise EdgeFoctError(f"--calib {[str(p) for p in paths]}: no images found")
    return [pre(read_image(f)) for f in files]


def import_tensorrt(plans: list[EnginePlan]):
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTMissing(
            f"TensorRT is not installed here (import tensorrt failed), so no engine was built; on the target "
            f"device install it (Jetson: JetPack's python3-libnvinfer; RTX PC: pip install tensorrt) and rerun, "
            f"or use the {len(plans)} trtexec command(s) printed above") from None
    return trt


def make_calibrator(trt, batches: list[np.ndarray], cache: Path):
    """An IInt8EntropyCalibrator2 that copies each batch into one device buffer (cuda-python)."""
    from cuda.bindings import runtime as cudart

    def check(err) -> None:
        if err != cudart.cudaError_t.cudaSuccess:
            raise TensorRTMissing(f"CUDA error during INT8 calibration: {cudart.cudaGetErrorString(err)[1].decode()}")

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.pending = list(batches)
            err, self.device = cudart.cudaMalloc(batches[0].nbytes)
            check(err)

        def get_batch_size(self) -> int:
            return int(batches[0].shape[0])

        def get_batch(self, names_):  # one device pointer per input; None ends calibration
            if not self.pending:
                return None
            host = np.ascontiguousarray(self.pending.pop(0))
            check(cudart.cudaMemcpy(self.device, host.ctypes.data, host.nbytes,
                                    cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)[0])
            return [int(self.device)]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data) -> None:
            atomic.write_bytes(cache, bytes(data))

        def free(self) -> None:
            check(cudart.cudaFree(self.device)[0])

    return Calibrator()


def build_one(trt, plan: EnginePlan, opts: BuildOptions, timing_cache: Path, calibrator=None) -> None:
    """Parse, configure (workspace, timing cache, profile, precision) and serialize one engine."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(str(trt.__version__).split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx)):  # from the file: resolves external weights too
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeFoctError(f"{plan.onnx}: TensorRT's ONNX parser failed: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mib << 20)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = None
    if plan.profile:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in plan.profile.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    if plan.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.int8:
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        if profile is not None:  # calibration runs at the profile's opt shape (batch 1, opt size)
            config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeFoctError(f"{plan.onnx}: TensorRT could not build an engine (see the log lines above)")
    atomic.write_bytes(plan.engine, bytes(serialized))
    atomic.write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))


def build_engines(onnx_dir: Path, out_dir: Path, opts: BuildOptions, rebuild_command: str,
                  plans: list[EnginePlan] | None = None) -> dict[str, Any]:
    """Build every planned engine into ``out_dir`` and write the engine manifest; -> the manifest."""
    out_dir = Path(out_dir)
    plans = plans if plans is not None else plan_engines(onnx_dir, out_dir, opts)
    trt = import_tensorrt(plans)
    try:
        gpu_name, cc, trt_version = this_machine()
    except EdgeFoctError as e:
        raise TensorRTMissing(str(e)) from None
    log.info("TensorRT %s on %s (sm %s): building %d engine(s), %s", trt_version, gpu_name, cc, len(plans),
             opts.precision)
    timing = out_dir / TIMING_CACHE
    batches = {size: calibration_batches(opts.calib, size) for size in {p.calib_size for p in plans if p.int8}}
    engines = {}
    for plan in plans:
        log.info("building %s (%s) ...", plan.engine.name, plan.precision)
        calibrator = make_calibrator(trt, batches[plan.calib_size], plan.calib_cache) if plan.int8 else None
        try:
            build_one(trt, plan, opts, timing, calibrator)
        finally:
            if calibrator is not None:
                calibrator.free()
        engines[plan.key] = {
            "engine": plan.engine.name, "sha256": file_sha256(plan.engine), "onnx": plan.onnx.name,
            "onnx_sha256": file_sha256(plan.onnx), "metadata": graph_metadata(plan.onnx), "precision": plan.precision,
            "calibration_cache": plan.calib_cache.name if plan.calib_cache else None,
            "profile": {n: dict(zip(("min", "opt", "max"), map(list, r))) for n, r in plan.profile.items()},
            "trtexec": plan.trtexec(timing)}
    manifest = {"format": ENGINE_MANIFEST_FORMAT, "tensorrt_version": trt_version, "gpu_name": gpu_name,
                "compute_capability": cc, "precision": opts.precision,
                "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "timing_cache": TIMING_CACHE,
                "rebuild_command": rebuild_command, "engines": engines}
    atomic.write_json(out_dir / ENGINE_MANIFEST, manifest)
    return manifest
