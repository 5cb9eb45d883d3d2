"""Soak test of `edge-foct serve`: N frames (default 10,000) from a video file, dashboard on.

Fits a 2-shot bank on the built-in demo product, writes an N-frame video of its parts, and runs
the serving app on it losslessly (every frame inspected) with the dashboard up and a client
polling /api/status once a second (127.0.0.1 only, bounded). Reports throughput, per-frame
latency p50/p95/p99 (inference + outputs, and end to end with the queue), and the resident memory
(VmRSS) at the start, every 10 % of the run and at the end: it must stay flat, since every memory
in the app is bounded (queue, event ring, latency window, snapshots kept, episodic memory)::

    python benchmarks/soak.py --frames 10000 --size 128 --backbone ../shared/weights/mobilenetv2-12-int8.onnx
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from edge_foct.edge_app.backbones import as_feature_graph
from edge_foct.edge_app.datasets.demo_product import write_demo_dataset
from edge_foct.edge_app.serve.app import ServeApp, ServeOptions
from edge_foct.edge_app.serve.demo import stream_order
from edge_foct.edge_app.serve.sources import CaptureSource
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.config import Config
from edge_foct.runtime.fit import fit_bank
from edge_foct.runtime.image_io import list_images, read_image


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def write_soak_video(frames: list[np.ndarray], n: int, path: Path, size: int) -> Path:
    """n frames cycling through ``frames`` (MJPG: small on disk; compression does not matter here)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (size, size))
    small = [cv2.cvtColor(cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
             for f in frames]
    for i in range(n):
        writer.write(small[i % len(small)])
    writer.release()
    return path


def poll_status(url: str, stop: threading.Event, every: float, max_requests: int) -> int:
    """A dashboard client: GET /api/status every ``every`` s, at most ``max_requests`` times."""
    done = 0
    while done < max_requests and not stop.wait(every):
        with urllib.request.urlopen(url + "api/status", timeout=5) as r:
            json.loads(r.read())
        done += 1
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--backbone", default=None, help="ONNX backbone; default: a random CNN (export extra)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.backbone:
            bb_path = as_feature_graph(Path(args.backbone))
        else:
            from edge_foct.export.random_backbone import build_random_backbone

            bb_path = build_random_backbone(tmp / "random.onnx")
        bb = Backbone.load(bb_path)
        cat = write_demo_dataset(tmp / "data", n_train=8, n_good=24, n_defect=8)
        support = [read_image(p) for p in list_images([str(cat / "train" / "good")])[:2]]
        cfg = Config().replace(input={"resize": args.size, "crop": args.size})
        bank = fit_bank(bb, support, cfg).save(tmp / "bank")
        video = write_soak_video([read_image(p) for p in stream_order(cat)], args.frames, tmp / "soak.avi",
                                 args.size)
        opts = ServeOptions(bank=bank, out=tmp / "out", port=0, lossless=True, save_every=10.0,
                            keep_snapshots=100)
        app = ServeApp(opts, CaptureSource(video, "video"))
        app.start()
        stop = threading.Event()
        poller = threading.Thread(target=poll_status, args=(app.dashboard.url, stop, 1.0, 100_000), daemon=True)
        poller.start()
        while app.live.counters["frames"] < min(100, args.frames) and not app.wait(0.05):
            pass
        t0, frames0, rss = time.perf_counter(), app.live.counters["frames"], [(app.live.counters["frames"], rss_mib())]
        step = max(1, args.frames // 10)
        while not app.wait(0.2):
            if app.live.counters["frames"] >= rss[-1][0] + step:
                rss.append((app.live.counters["frames"], rss_mib()))
        wall = time.perf_counter() - t0
        result = app.stop()
        stop.set()
        rss.append((result.frames, rss_mib()))
        events = [json.loads(line) for line in (tmp / "out" / "events.jsonl").read_text().splitlines()]
        total = np.array([e["latency_ms"]["total"] for e in events])
        e2e = np.array([e["latency_ms"]["total"] + e["latency_ms"]["queue"] for e in events])
        snap_dir = tmp / "out" / "snapshots"
        snapshots = len(list(snap_dir.iterdir())) if snap_dir.is_dir() else 0
    pct = lambda a: {f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 95, 99)}  # noqa: E731
    out = {"frames": result.frames, "reason": result.reason, "size": args.size, "backbone": bb.info.backbone_id,
           "throughput_fps": round((result.frames - frames0) / wall, 2), "latency_ms": pct(total),
           "end_to_end_ms": pct(e2e), "rss_mib": [[f, round(m, 1)] for f, m in rss],
           "defective": int(sum(e["defective"] for e in events)), "snapshots_kept": snapshots}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
