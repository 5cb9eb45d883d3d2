"""Does a broker outage slow inspection? One `serve --mqtt` station, broker up / down / up again.

A 2-shot bank on the built-in demo product (random CNN backbone unless ``--backbone``), a video
played like a camera at ``--fps``, the app's real publisher to a local mosquitto (Debian package)
that is stopped (SIGTERM) for the middle phase. Per phase, per frame: the inspection latency
(``latency_ms.total`` of the event: inference + outputs) and the outbox write (the on-disk put of
the frame's broker messages, the only MQTT work on the inference thread); then the outbox's
high-water mark, and whether every event reached a QoS 1 subscriber afterwards::

    python benchmarks/mqtt_broker_down.py --phase-s 15 --fps 10
"""

from __future__ import annotations

import argparse
import getpass
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edge_foct.edge_app.datasets.demo_product import write_demo_dataset
from edge_foct.edge_app.machine_info import describe, machine_info
from edge_foct.edge_app.serve.app import ServeApp, ServeOptions
from edge_foct.edge_app.serve.demo import stream_order, write_video
from edge_foct.edge_app.serve.mqtt_config import MqttConfig, resolve
from edge_foct.edge_app.serve.mqtt_watch import Watcher
from edge_foct.edge_app.serve.sources import CaptureSource
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.config import Config
from edge_foct.runtime.fit import fit_bank
from edge_foct.runtime.image_io import list_images, read_image


class Broker:
    def __init__(self, folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {folder}/\nmax_queued_messages 0\nuser {getpass.getuser()}\n")
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("mosquitto did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase-s", type=float, default=15.0, help="seconds per phase: up, down, up")
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="mqtt-down-") as tmp:
        tmp = Path(tmp)
        from edge_foct.export.random_backbone import build_random_backbone

        bb = Backbone.load(build_random_backbone(tmp / "random.onnx"))
        cat = write_demo_dataset(tmp / "data", n_train=4, n_good=12, n_defect=4)
        support = [read_image(p) for p in list_images([str(cat / "train" / "good")])[:2]]
        bank = fit_bank(bb, support, Config().replace(input={"resize": args.size, "crop": args.size})).save(tmp / "bank")
        video = write_video([read_image(p) for p in stream_order(cat)], tmp / "line.avi", args.size)
        broker = Broker(tmp)
        broker.start()
        url = f"mqtt://127.0.0.1:{broker.port}/bench"
        got: set = set()
        lock = threading.Lock()

        def on(r) -> None:
            if r.kind == "events":
                with lock:
                    got.add((r.payload["run"], r.payload["frame"]))

        watcher = Watcher(resolve(MqttConfig(url=url), env={}), on, events=True, client_id="bench-view")
        watcher.start()
        watcher.subscribed.wait(30)
        settings = resolve(MqttConfig(url=url, station="bench"), env={})
        app = ServeApp(ServeOptions(bank=bank, out=tmp / "out", dashboard=False, mqtt=settings),
                       CaptureSource(video, "video", fps=args.fps, loop=True))
        app.start()
        pub, puts = app.publisher, {}
        real_put = pub.put

        def timed_put(event: dict) -> None:  # the app's sink calls publisher.put: time it per frame
            t = time.perf_counter()
            real_put(event)
            puts[event["frame"]] = (time.perf_counter() - t) * 1e3

        pub.put = timed_put
        phases = []
        for name in ("up", "down", "up again"):
            if name == "down":
                broker.stop()
            elif name == "up again":
                broker.start()
            t0 = time.time()
            time.sleep(args.phase_s)
            phases.append((name, t0, time.time()))
        high = pub.queue.high_water
        app.stop()
        end = time.time() + 60
        events = [json.loads(line) for line in (tmp / "out" / "events.jsonl").read_text().splitlines()]
        while time.time() < end and len(got) < len(events):
            time.sleep(0.1)
        watcher.stop()
        broker.stop()
    print(f"broker outage: one station at {args.fps} frames/s, {args.size} px, random CNN; {args.phase_s:.0f} s per phase")
    print(f"machine: {describe(info)}")
    print(f"{'phase':>9} | {'frames':>6} | {'inspection ms p50':>17} | {'p95':>7} | {'outbox put ms p50':>17} | {'p95':>6}")
    rows = []
    for name, a, b in phases:
        es = [e for e in events if a + 0.5 < e["time"] < b]  # the first half second after a change left out
        total = np.array([e["latency_ms"]["total"] for e in es])
        put = np.array([puts[e["frame"]] for e in es if e["frame"] in puts])
        row = {"phase": name, "frames": len(es), "inspection_ms": np.percentile(total, [50, 95]).round(2).tolist(),
               "outbox_put_ms": np.percentile(put, [50, 95]).round(3).tolist()}
        rows.append(row)
        print(f"{name:>9} | {len(es):>6} | {row['inspection_ms'][0]:>17.2f} | {row['inspection_ms'][1]:>7.2f} | "
              f"{row['outbox_put_ms'][0]:>17.3f} | {row['outbox_put_ms'][1]:>6.3f}")
    lost = len({(e["run"], e["frame"]) for e in events} - got)
    print(f"frames inspected {len(events)}, received by the subscriber {len(got)}, lost {lost}, outbox high-water {high}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "phases": rows, "frames": len(events), "received": len(got),
                                         "lost": lost, "outbox_high_water": high}, indent=2) + "\n")


if __name__ == "__main__":
    main()
