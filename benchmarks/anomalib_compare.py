"""edge-foct against anomalib's PatchCore on this machine's CPU: one run, rows interleaved by rounds.

    python benchmarks/anomalib_compare.py --anomalib-python /path/to/anomalib-venv/bin/python \\
        --size 256 --out benchmarks/results/anomalib_compare

anomalib is NOT a dependency of edge-foct: it lives in its own virtual environment (for instance
``python -m venv V && V/bin/pip install torch==2.14.1 torchvision==0.29.1 anomalib openvino onnx
onnxruntime onnxscript``), and this script only calls its public API there (``Patchcore``,
``configure_pre_processor``, ``fit``, ``to_onnx``, ``to_openvino``, ``OpenVINOInferencer``). When that
interpreter is missing or cannot import anomalib, the script says so and exits 0.

Both sides: WideResNet-50-2 to layer3 (layer2 + layer3 features) with random weights (anomalib
``pre_trained=False`` under ``torch.manual_seed(0)``; edge-foct the random-weights feature ONNX,
``export_wide_resnet50(random_weights=True)``), ``--size`` px square input, a ``--shots`` bank from
``--data``'s train/good (the same draw as ``edge-foct bench``), batch 1, the category's test images
decoded beforehand and cycled as frames. Rows (each in its own process, so peak RSS is the row's):

    anomalib torch eager        Lightning module in eval mode, torch's default threads
    anomalib onnxruntime        its ``to_onnx`` graph on ONNX Runtime, default session options
    anomalib openvino           its ``to_openvino`` IR on OpenVINOInferencer("CPU"), default precision
    anomalib openvino f32       the same with INFERENCE_PRECISION_HINT f32
    edge-foct <method> <engine> runtime Inspector (runtime/pipeline.py) with the default thread plan,
                                engines cpu (ONNX Runtime f32), openvino (bf16 where the CPU has it),
                                openvino:f32

Timed per frame: the whole call from the decoded frame (H, W, 3) uint8 to the image score and the
anomaly map (anomalib: resize to ``--size`` with OpenCV + scaling to [0, 1] + the model, whose graph
holds its normalisation, kNN and map; edge-foct: ``Inspector.inspect``). Every worker sets up and
runs ``--warmup`` frames first, one at a time; then rounds of ``--round`` frames go through every row
in turn until ``--frames``, so a load change on a shared box hits every row alike. Prints one table:
median / p95 ms, peak RSS per row, machine (CPU, flags), commit, load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ANOMALIB_ROWS = ("torch", "onnxruntime", "openvino", "openvino:f32")
EDGE_ENGINES = ("cpu", "openvino", "openvino:f32")
EDGE_METHODS = ("patchcore", "foct/edge")
#: anomalib 2.7's to_onnx(input_size=(S, S)) marks the batch axis dynamic, but its dynamo export
#: specialises it to its example batch of 2: the graph then refuses a batch of 1 ("Got: 1 Expected: 2",
#: both ONNX Runtime and OpenVINO). No dynamic axes -> a static (1, 3, S, S) graph, what batch 1 runs.
STATIC = {"dynamic_axes": {}}


# --- shared by both sides (plain NumPy + OpenCV: the anomalib venv has both) --------------------
def load_frames(data: Path, shots: int, seed: int, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """-> support images, frames: (H, W, 3) uint8 RGB, drawn as ``edge-foct bench`` draws them."""
    import cv2

    exts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    listing = lambda d: sorted(p for p in d.iterdir() if p.suffix.lower() in exts)
    read = lambda p: cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    train = listing(data / "train" / "good")
    test = [p for d in sorted((data / "test").iterdir()) if d.is_dir() for p in listing(d)]
    rng = np.random.default_rng(seed)
    support = [read(train[i]) for i in sorted(rng.choice(len(train), shots, replace=False))]
    return support, [read(p) for p in test[: max(1, min(len(test), n))]]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def serve(step, warmup: int, frames: list[np.ndarray], describe: dict) -> None:
    """Worker loop: warm up, say READY, then answer ``RUN k`` with k frames' ms and ``END`` with RSS."""
    for i in range(warmup):
        step(frames[i % len(frames)])
    print("READY " + json.dumps(describe), flush=True)
    i = warmup
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "RUN":
            ms = []
            for _ in range(int(cmd[1])):
                t = time.perf_counter()
                step(frames[i % len(frames)])
                ms.append((time.perf_counter() - t) * 1e3)
                i += 1
            print("MS " + json.dumps(ms), flush=True)
        else:
            print("END " + json.dumps({"peak_rss_mib": peak_rss_mib()}), flush=True)
            return


# --- anomalib side (runs under --anomalib-python) ------------------------------------------------
def anomalib_model(args, support: list[np.ndarray]):
    """anomalib Patchcore, random WRN-50-2 weights, its memory bank fitted on the support images."""
    import torch
    from anomalib.models import Patchcore

    torch.manual_seed(0)
    model = Patchcore(backbone="wide_resnet50_2", layers=("layer2", "layer3"), pre_trained=False,
                      coreset_sampling_ratio=0.1,
                      pre_processor=Patchcore.configure_pre_processor(image_size=(args.size, args.size)),
                      evaluator=False, visualizer=False)
    model.model.train()
    with torch.inference_mode():
        for img in support:  # the training step's call: pre-processed image -> embeddings stored
            model.model(model.pre_processor.transform(torch.from_numpy(to_input(img, args.size))))
    model.fit()  # coreset subsampling of the stored embeddings (anomalib's own)
    model.eval()
    return model


def to_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, size, size) float32 in [0, 1] (anomalib's inferencers take [0, 1])."""
    import cv2

    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32).transpose(2, 0, 1)[None] / 255.0


def anomalib_export(args) -> None:
    """Child of an exported-graph row: fit, export, write the path and the bank's shape as JSON."""
    import torch
    from anomalib import __version__ as anomalib_version

    support, _ = load_frames(args.data, args.shots, args.seed, 1)
    model = anomalib_model(args, support)
    export = Path(args.tmp) / f"anomalib-{args.row.replace(':', '-')}"
    if args.row == "onnxruntime":
        path = model.to_onnx(export, input_size=(args.size, args.size), **STATIC)
    else:
        path = model.to_openvino(export, input_size=(args.size, args.size), onnx_kwargs=STATIC)
    bank = model.model.memory_bank
    print("EXPORTED " + json.dumps({"path": str(path), "anomalib": anomalib_version, "torch": torch.__version__,
                                    "memory_rows": int(bank.shape[0]), "feature_dim": int(bank.shape[1])}), flush=True)


def anomalib_worker(args) -> None:
    """torch eager: the fitted module itself. Exported rows: a child process fits and exports, this
    process only loads the graph (ONNX Runtime: no torch in it; OpenVINO: anomalib's inferencer)."""
    _, frames = load_frames(args.data, args.shots, args.seed, args.frames + args.warmup)
    size = args.size
    if args.row == "torch":
        import torch
        from anomalib import __version__ as anomalib_version

        support, _ = load_frames(args.data, args.shots, args.seed, 1)
        model = anomalib_model(args, support)
        desc = {"anomalib": anomalib_version, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                "memory_rows": int(model.model.memory_bank.shape[0]),
                "feature_dim": int(model.model.memory_bank.shape[1])}

        def step(rgb):
            with torch.inference_mode():
                out = model(torch.from_numpy(to_input(rgb, size)))
            return float(out.pred_score), out.anomaly_map.numpy()
        return serve(step, args.warmup, frames, desc)
    r = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--worker", "anomalib-export"],
                       capture_output=True, text=True, check=False)
    got = [ln for ln in r.stdout.splitlines() if ln.startswith("EXPORTED ")]
    if not got:
        sys.stderr.write(r.stderr[-3000:])
        raise SystemExit(f"anomalib export failed (exit {r.returncode})")
    desc = json.loads(got[0][len("EXPORTED "):])
    path = desc.pop("path")
    if args.row == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        desc.update(onnxruntime=ort.__version__, session="default SessionOptions", torch_loaded="torch" in sys.modules)

        def step(rgb):
            return session.run(None, {name: to_input(rgb, size)})
    else:
        import openvino as ov
        from anomalib.deploy import OpenVINOInferencer

        config = {"INFERENCE_PRECISION_HINT": "f32"} if args.row.endswith(":f32") else None
        inferencer = OpenVINOInferencer(path, device="CPU", config=config)
        compiled = inferencer.model
        desc.update(openvino=ov.get_version().split("-")[0], config=config or "default",
                    inference_precision=str(compiled.get_property("INFERENCE_PRECISION_HINT")),
                    performance_hint=str(compiled.get_property("PERFORMANCE_HINT")),
                    streams=int(compiled.get_property("NUM_STREAMS")))

        def step(rgb):
            return inferencer.predict(to_input(rgb, size))
    serve(step, args.warmup, frames, desc)


# --- edge-foct side (runs under this interpreter) ---------------------------------------------
def edge_worker(args) -> None:
    from edge_foct.edge_app.evaluation.latency import fit_row, open_rows
    from edge_foct.edge_app.evaluation.runner import load_foreground
    from edge_foct.runtime.threads import apply_plan, plan_threads

    support, frames = load_frames(args.data, args.shots, args.seed, args.frames + args.warmup)
    plan = plan_threads(None)
    apply_plan(plan)
    (row,) = open_rows(args.backbone, [args.engine], [plan], [args.method])
    pre = row.backbone.preprocessor(args.size, args.size)
    fit_row(row, pre, support, load_foreground()[0])
    desc = {"system": "edge-foct", "engine": row.backbone.engine.description, "precision": row.choice.precision,
            "threads": plan.short(),
            "distances": row.compute.description.rpartition("distances on ")[2] or "numpy BLAS",
            "feature_dim": int(row.backbone.info.feature_dim),
            "memory_rows": len(row.inspector.method.arrays()["memory"])}

    def step(rgb):
        return row.inspector.inspect(rgb)
    del support
    serve(step, args.warmup, frames, desc)


# --- orchestration --------------------------------------------------------------------------
def anomalib_ready(python: Path | None) -> tuple[bool, str]:
    if python is None or not python.exists():
        return False, f"no anomalib interpreter at {python} (give --anomalib-python; see this script's docstring)"
    r = subprocess.run([str(python), "-c", "import anomalib, openvino, onnxruntime; print(anomalib.__version__)"],
                       capture_output=True, text=True, check=False)
    if r.returncode:
        return False, f"{python} cannot import anomalib/openvino/onnxruntime: {(r.stderr.strip().splitlines() or ['?'])[-1]}"
    return True, r.stdout.strip()


class Worker:
    def __init__(self, label: str, cmd: list[str], log: Path) -> None:
        self.label, self.log = label, log
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=log.open("w"), text=True, bufsize=1)
        self.ms: list[float] = []
        self.desc: dict = {}
        self.rss = float("nan")
        self.error = ""

    def reply(self, tag: str) -> str | None:
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return line[len(tag) + 1:]
        tail = self.log.read_text().strip().splitlines()[-3:]
        self.error = " | ".join(tail) or f"exit {self.proc.wait()}"
        return None

    def ready(self) -> bool:
        got = self.reply("READY")
        if got is not None:
            self.desc = json.loads(got)
        return got is not None

    def run(self, k: int) -> None:
        self.proc.stdin.write(f"RUN {k}\n")
        got = self.reply("MS")
        if got is not None:
            self.ms += json.loads(got)

    def end(self) -> None:
        if not self.error:
            self.proc.stdin.write("END\n")
            got = self.reply("END")
            if got is not None:
                self.rss = json.loads(got)["peak_rss_mib"]
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--anomalib-python", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "bottle")
    ap.add_argument("--backbone", type=Path, default=None,
                    help="edge-foct's random-weights WRN-50-2 feature ONNX [default: made in the user cache]")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--round", type=int, default=10, help="frames per row per round")
    ap.add_argument("--rows", nargs="*", default=None, help="subset of row labels to run")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", choices=("anomalib", "anomalib-export", "edge"), help=argparse.SUPPRESS)
    ap.add_argument("--row", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker == "anomalib":
        return anomalib_worker(args)
    if args.worker == "anomalib-export":
        return anomalib_export(args)
    if args.worker == "edge":
        return edge_worker(args)

    ok, version = anomalib_ready(args.anomalib_python)
    if not ok:
        print(f"anomalib comparison NOT run: {version}. Nothing measured.")
        return
    if not args.data.is_dir():
        print(f"anomalib comparison NOT run: no data at {args.data}. Nothing measured.")
        return
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from wrn_random import DEFAULT, ensure_wrn

    args.backbone = ensure_wrn(args.backbone or DEFAULT)
    specs = [(f"anomalib {r}", "anomalib", {"--row": r}) for r in ANOMALIB_ROWS]
    specs += [(f"edge-foct {m} {e}", "edge", {"--method": m, "--engine": e}) for e in EDGE_ENGINES for m in EDGE_METHODS]
    if args.rows:
        specs = [s for s in specs if s[0] in args.rows]
    common = ["--data", str(args.data), "--size", str(args.size), "--shots", str(args.shots), "--seed",
              str(args.seed), "--frames", str(args.frames), "--warmup", str(args.warmup),
              "--backbone", str(args.backbone)]
    with tempfile.TemporaryDirectory(prefix="anomalib-compare-") as tmp:
        workers = []
        for label, side, extra in specs:  # set up one at a time: no setup competes with another
            py = str(args.anomalib_python) if side == "anomalib" else sys.executable
            cmd = [py, __file__, "--worker", side, "--tmp", tmp, *common,
                   *[x for kv in extra.items() for x in kv]]
            w = Worker(label, cmd, Path(tmp) / f"{len(workers)}.log")
            t0 = time.perf_counter()
            print(f"setting up {label} ...", file=sys.stderr, flush=True)
            if not w.ready():
                print(f"  {label} FAILED: {w.error}", file=sys.stderr, flush=True)
            else:
                print(f"  ready in {time.perf_counter() - t0:.0f} s: {w.desc}", file=sys.stderr, flush=True)
            workers.append(w)
        live = [w for w in workers if not w.error]
        load0 = os.getloadavg()
        done = 0
        while done < args.frames:
            k = min(args.round, args.frames - done)
            for w in live:
                if not w.error:
                    w.run(k)
            done += k
            print(f"  {done}/{args.frames} frames through {len(live)} rows", file=sys.stderr, flush=True)
        load1 = os.getloadavg()
        for w in workers:
            w.end()
        for w in workers:
            if w.error:
                print(f"{w.label} log:\n{(Path(tmp) / f'{workers.index(w)}.log').read_text()[-4000:]}", file=sys.stderr)
    import datetime as dt

    from edge_foct.edge_app.machine_info import describe, machine_info
    from edge_foct.runtime import atomic

    machine = machine_info()  # CPU, flags, cores, load, versions, git commit (the project's one place)
    commit, dirty = (machine["git"].get("commit") or "")[:10], bool(machine["git"].get("dirty"))
    head = (f"{describe(machine)} | "
            f"{dt.datetime.now(dt.UTC).isoformat(timespec='minutes')} | load average "
            f"{load0[0]:.1f} at the start, {load1[0]:.1f} at the end of the timed rounds\n\n"
            f"WRN-50-2 to layer3 (layer2+layer3), random weights on both sides, {args.size} px, {args.shots}-shot "
            f"bank from {args.data.name}/train/good, batch 1, {args.frames} frames after {args.warmup} warm-up, "
            f"{len(live)} rows each in its own process, interleaved in rounds of {args.round} frames; "
            f"anomalib {version}. Time: decoded frame -> image score + anomaly map.\n")
    lines = ["| system | median ms | p95 ms | peak RSS MiB | memory rows x dim | details |", "|---|---|---|---|---|---|"]
    for w in workers:
        if w.error:
            lines.append(f"| {w.label} | FAILED | – | – | – | {w.error[:300]} |")
            continue
        ms = np.asarray(w.ms)
        d = {k: v for k, v in w.desc.items() if k not in ("system", "memory_rows", "feature_dim")}
        lines.append(f"| {w.label} | {np.median(ms):.1f} | {np.percentile(ms, 95):.1f} | {w.rss:.0f} | "
                     f"{w.desc.get('memory_rows')} x {w.desc.get('feature_dim')} | "
                     f"{', '.join(f'{k} {v}' for k, v in d.items())} |")
    md = head + "\n" + "\n".join(lines) + "\n"
    print(md)
    if args.out:
        atomic.write_bytes(args.out / f"compare_{args.size}.md", md.encode())
        atomic.write_json(args.out / f"compare_{args.size}.json", {
            "size": args.size, "frames": args.frames, "warmup": args.warmup, "round": args.round,
            "data": args.data.name, "shots": args.shots, "commit": commit, "dirty": dirty, "machine": machine,
            "load_average": {"start": load0, "end": load1}, "anomalib": version,
            "rows": [{"label": w.label, "ms": w.ms, "peak_rss_mib": w.rss, "describe": w.desc, "error": w.error}
                     for w in workers]})


if __name__ == "__main__":
    main()
