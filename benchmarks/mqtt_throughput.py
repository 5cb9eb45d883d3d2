"""MQTT throughput: events per second one Mosquitto takes from N simulated stations.

Each simulated station is a process running the app's own publisher (edge_app/serve/mqtt_publisher.py:
the on-disk outbox, paho-mqtt, QoS 1, at most 64 frames in flight) fed ``--events`` synthetic events
(shaped like events.jsonl lines, ~600 bytes; every 10th is a defect, so it also goes to .../defects)
as fast as it takes them: no inference, so the broker and the publishing path are what is measured.
One subscriber (the `edge-foct watch` code, QoS 1, de-duplicating) receives every station's events.

Per run: delivered events/s (events the subscriber received / time from the first put to the last
arrival), acknowledged events/s at the stations (PUBACKs), the outbox write (put) p50/p95, and
whether every event arrived. Repeated ``--repeats`` times per N; the table gives median and p95
over the repeats, and the machine and commit (the box may be shared: the load average is printed)::

    python benchmarks/mqtt_throughput.py --stations 1 4 16 --events 2000 --repeats 3
    python benchmarks/mqtt_throughput.py --url mqtt://broker.plant:1883/bench   # an existing broker

Without ``--url`` it starts its own mosquitto (Debian package ``mosquitto``) on 127.0.0.1, in memory
(no persistence), ``max_queued_messages 0`` (a slow subscriber is never dropped).
"""

from __future__ import annotations

import argparse
import getpass
import json
import multiprocessing as mp
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edge_foct.edge_app.machine_info import describe, machine_info
from edge_foct.edge_app.serve.mqtt_config import MqttConfig, resolve
from edge_foct.edge_app.serve.mqtt_publisher import MqttPublisher
from edge_foct.edge_app.serve.mqtt_watch import Watcher


def start_mosquitto(folder: Path) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
                    f"max_inflight_messages 100\nuser {getpass.getuser()}\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def event(run: str, frame: int) -> dict:
    lat = {"queue": 0.1, "preprocess": 1.2, "backbone": 8.5, "method": 2.1, "map": 0.9, "render": 3.3, "total": 16.0}
    return {"run": run, "frame": frame, "time": round(time.time(), 4), "score": 12.345678, "defective": frame % 10 == 0,
            "threshold": 13.0, "latency_ms": lat, "diagnostics": {"memory_size": 1234},
            "snapshot": f"snapshots/{run}-{frame:07d}_overlay.jpg" if frame % 10 == 0 else None}


def station(i: int, url: str, n: int, folder: str, go, results) -> None:
    settings = resolve(MqttConfig(url=url, station=f"sim-{i:03d}", queue_max=n + 10), env={})
    run = f"bench{i:03d}"
    pub = MqttPublisher(settings, Path(folder) / f"sim-{i:03d}", Path(folder), lambda: {}, run)
    pub.start()
    pub._connected.wait(30)
    go.wait()
    puts = np.empty(n)
    t0 = time.perf_counter()
    for f in range(n):
        t = time.perf_counter()
        pub.put(event(run, f))
        puts[f] = time.perf_counter() - t
    put_s = time.perf_counter() - t0
    while pub.published < n and time.perf_counter() - t0 < 600:
        time.sleep(0.01)
    acked_s = time.perf_counter() - t0
    pub.close(drain_timeout=5)
    results.put({"station": i, "put_s": put_s, "acked_s": acked_s, "acked": pub.published,
                 "put_ms": np.percentile(puts * 1e3, [50, 95]).tolist()})


def one_run(url: str, n_stations: int, n_events: int, folder: Path) -> dict:
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    got, last = [0], [0.0]
    lock = threading.Lock()

    def on(r) -> None:
        if r.kind == "events":
            with lock:
                got[0] += 1
                last[0] = time.perf_counter()

    watcher = Watcher(resolve(MqttConfig(url=url), env={}), on, events=True)
    watcher.start()
    watcher.subscribed.wait(30)
    procs = [ctx.Process(target=station, args=(i, url, n_events, str(folder), go, results)) for i in range(n_stations)]
    for p in procs:
        p.start()
    time.sleep(1.0 + 0.1 * n_stations)  # every station connected (each waits for its CONNACK before go)
    t0 = time.perf_counter()
    go.set()
    total = n_stations * n_events
    while got[0] < total and time.perf_counter() - t0 < 600:
        time.sleep(0.01)
    stations = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    watcher.stop()
    elapsed = last[0] - t0
    return {"stations": n_stations, "events": total, "received": got[0], "duplicates": watcher.counts.duplicates,
            "delivered_per_s": got[0] / elapsed, "acked_per_s": total / max(s["acked_s"] for s in stations),
            "put_ms_p50": float(np.median([s["put_ms"][0] for s in stations])),
            "put_ms_p95": float(np.median([s["put_ms"][1] for s in stations]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stations", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--events", type=int, default=2000, help="events per station per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--url", default=None, help="an existing broker (default: start a local mosquitto)")
    ap.add_argument("--json", type=Path, default=None, help="also write the records here")
    args = ap.parse_args()
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="mqtt-bench-") as tmp:
        tmp = Path(tmp)
        broker, url = None, args.url
        if url is None:
            broker, port = start_mosquitto(tmp)
            url = f"mqtt://127.0.0.1:{port}/bench"
        try:
            rows = []
            for n in args.stations:
                runs = [one_run(url, n, args.events, tmp / f"n{n}-r{r}") for r in range(args.repeats)]
                rows.append((n, runs))
        finally:
            if broker is not None:
                broker.send_signal(signal.SIGTERM)
                broker.wait(10)
    print(f"MQTT throughput, one broker ({'local mosquitto' if args.url is None else args.url}), "
          f"{args.events} events per station, {args.repeats} runs each")
    print(f"machine: {describe(info)}")
    print(f"{'stations':>8} | {'delivered ev/s median':>21} | {'p95':>8} | {'acked ev/s median':>17} | "
          f"{'put ms p50/p95':>14} | lost | dup")
    records = []
    for n, runs in rows:
        d = np.array([r["delivered_per_s"] for r in runs])
        a = np.array([r["acked_per_s"] for r in runs])
        lost = sum(r["events"] - r["received"] for r in runs)
        dup = sum(r["duplicates"] for r in runs)
        put = (np.median([r["put_ms_p50"] for r in runs]), np.median([r["put_ms_p95"] for r in runs]))
        # p95 of a throughput is its slow end: the 5th percentile of the rates
        print(f"{n:>8} | {np.median(d):>21.0f} | {np.percentile(d, 5):>8.0f} | {np.median(a):>17.0f} | "
              f"{put[0]:>6.3f}/{put[1]:<7.3f} | {lost:>4} | {dup}")
        records.append({"stations": n, "runs": runs})
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "records": records}, indent=2) + "\n")


if __name__ == "__main__":
    main()
