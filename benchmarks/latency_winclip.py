"""WinCLIP / WinCLIP+ latency per stage against PatchCore, in one run, on this CPU.

    python benchmarks/latency_winclip.py --out benchmarks/results/winclip_latency

Graphs: open_clip's ViT-B-16-plus-240 with RANDOM weights (no CLIP weights can be fetched on these
machines; the timing does not depend on the weights), exported once by export/clip_vit.py into
``--clip-dir``, and the random WRN-50-2 at 256 for PatchCore (benchmarks/wrn_random.py). Banks:
2 support images from ``--data``'s train/good through ``fit_bank`` (winclip also with 0), with a
fixed threshold (the leave-one-out views would cost 16 more CLIP passes per bank; timing only).
Per frame the CLIP graph runs once and its features go to every WinCLIP bank (the backbone stage
is the same computation for all of them); PatchCore runs its own backbone. Stages as the served
path (runtime/pipeline.py): preprocess, backbone, method, map. Median / p95 ms of wall time, on a
2-core CPU shared with other jobs: noisy. The paper's per-image times are from an RTX 3090.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import wrn_random  # benchmarks/wrn_random.py (the script's own folder is on sys.path)

from edge_foct.edge_app.evaluation.latency import PAPERS_RTX3090
from edge_foct.edge_app.machine_info import describe, machine_info
from edge_foct.runtime import atomic
from edge_foct.runtime.anomaly_map import anomaly_map, image_score
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.config import Config
from edge_foct.runtime.fit import fit_bank
from edge_foct.runtime.image_io import list_images, read_image

CLIP_DIR = Path.home() / ".cache" / "edge-foct" / "backbones" / "clip-vitb16plus240-random"
STAGES = ("preprocess", "backbone", "method", "map", "total")
#: label -> (method, preset, shots)
ROWS = {"winclip (0-shot)": ("winclip", None, 0), "winclip": ("winclip", None, 2),
        "winclip+": ("winclip+", "mvtec", 2), "patchcore": ("patchcore", None, 2)}


def ensure_clip(folder: Path) -> Path:
    """The random-weight ViT-B/16+ graph and its side data, exported once (torch side, offline)."""
    path = folder / "clip_ViT-B-16-plus-240.onnx"
    if not path.is_file():
        from edge_foct.edge_app.exporting import export_clip_graph

        export_clip_graph(folder, "ViT-B-16-plus-240", None, True, "object", 17)
    return path


def cpu_flags() -> list[str]:
    """The CPU flags that pick ONNX Runtime's / BLAS's kernels (float graphs: AVX2 / AVX-512 / AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(next((l.split(":", 1)[1].split() for l in text.splitlines() if l.startswith("flags")), []))
    keep = {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}
    return sorted(f for f in flags if f in keep or f.startswith("amx"))


def ms(a: float, b: float) -> float:
    return (b - a) * 1e3


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip-dir", type=Path, default=CLIP_DIR)
    ap.add_argument("--wrn", type=Path, default=wrn_random.DEFAULT)
    ap.add_argument("--data", type=Path, default=root.parent / "shared" / "data" / "metal_plate")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    t0 = time.perf_counter()
    clip = Backbone.load(ensure_clip(a.clip_dir))
    wrn = Backbone.load(wrn_random.ensure_wrn(a.wrn))
    export_s = time.perf_counter() - t0
    train = list_images(a.data / "train" / "good")
    support = [read_image(p) for p in train[:2]]
    tests = [p for d in sorted((a.data / "test").iterdir()) if d.is_dir() for p in list_images(d)]
    frames = [read_image(p) for p in tests[: a.frames + a.warmup]]
    methods, pres = {}, {}
    for label, (name, preset, shots) in ROWS.items():
        bb = wrn if name == "patchcore" else clip
        config = Config().replace(method={"name": name, "preset": preset}, threshold={"value": 1.0})
        bank = fit_bank(bb, support[:shots], config)
        methods[label] = bank.make_method()
        pres[label] = bb.preprocessor(*bank.input_size)
    times = {label: {s: [] for s in STAGES} for label in ROWS}
    diags = {}
    for i, frame in enumerate(frames):
        feats = {}
        for bb_name, bb in (("clip", clip), ("wrn", wrn)):  # one backbone pass per graph per frame
            pre = pres["winclip" if bb_name == "clip" else "patchcore"]
            c0 = time.perf_counter()
            crop = pre.crop_rgb(frame)
            x = pre.normalise(crop)
            c1 = time.perf_counter()
            f = bb.features(x)[0]  # (h, w, D)
            c2 = time.perf_counter()
            feats[bb_name] = (crop, f, ms(c0, c1), ms(c1, c2))
        for label, (name, _, _) in ROWS.items():
            crop, f, t_pre, t_bb = feats["wrn" if name == "patchcore" else "clip"]
            h, w, d = f.shape
            m0 = time.perf_counter()
            r = methods[label].score(f.reshape(h * w, d), update=True)
            m1 = time.perf_counter()
            patch = r.scores.reshape(h, w)
            anomaly_map(patch, crop.shape[:2])
            image_score(patch)
            m2 = time.perf_counter()
            if i >= a.warmup:
                for s, v in zip(STAGES, (t_pre, t_bb, ms(m0, m1), ms(m1, m2), t_pre + t_bb + ms(m0, m2))):
                    times[label][s].append(v)
            diags[label] = r.diagnostics
    rows = {label: {s: {"median": float(np.median(v)), "p95": float(np.percentile(v, 95))}
                    for s, v in times[label].items()} for label in ROWS}
    machine = {**machine_info(), "cpu_flags": cpu_flags()}
    result = {"note": "random weights (timing only); 2-core CPU shared with other agents' jobs while measured",
              "clip": {**clip.info.to_json(), "engine": clip.engine.description},
              "wrn": {**wrn.info.to_json(), "engine": wrn.engine.description},
              "frames": a.frames, "warmup": a.warmup, "data": str(a.data), "export_and_load_s": round(export_s, 1),
              "papers_rtx3090_s": PAPERS_RTX3090, "machine": machine, "latency_ms": rows,
              "last_diagnostics": diags}
    lines = [describe(machine), "",
             f"ViT-B-16-plus-240 random weights at 240 ({clip.engine.description}) for WinCLIP; WRN-50-2 random "
             f"at 256 for PatchCore; 2-shot banks (winclip also 0-shot); {a.frames} frames after {a.warmup} "
             f"warm-up; median ms (p95 in the JSON)", "",
             "| method | preprocess | backbone | method | map | total | paper s/img (RTX 3090) |",
             "|---|---|---|---|---|---|---|"]
    for label, (name, _, _) in ROWS.items():
        r = rows[label]
        lines.append(f"| {label} | " + " | ".join(f"{r[s]['median']:.1f}" for s in STAGES)
                     + f" | {PAPERS_RTX3090.get(name, float('nan')):.2f} |")
    md = "\n".join(lines) + "\n"
    atomic.write_json(a.out / "latency_winclip.json", result)
    atomic.write_bytes(a.out / "latency_winclip.md", md.encode())
    print(md)


if __name__ == "__main__":
    main()
