"""``edge-foct watch mqtt://HOST:PORT/PREFIX``: print every station's status and defects as they arrive.

The plant-side view of many ``serve --mqtt`` stations (and the tool the tests use): one line per
message, or one JSON object per line with ``--json``; repeats (QoS 1 is at least once) are dropped
by station + run id + frame id. Credentials and TLS as for serve (EDGE_FOCT_MQTT_USERNAME /
_PASSWORD / _PASSWORD_FILE, ``--config`` with an [mqtt] table). Ends on Ctrl-C / SIGTERM,
``--timeout`` or ``--count``, and prints what it received to stderr.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import click

from edge_foct.edge_app.serve.mqtt_config import load_serve_config, resolve
from edge_foct.edge_app.serve.mqtt_watch import Received, Watcher, format_line


@click.command("watch")
@click.argument("url")
@click.option("--events", is_flag=True, help="Every frame's event too, not only statuses and defects.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (topic, station, kind, payload).")
@click.option("--client-id", default=None,
              help="A fixed id: the broker keeps this watcher's subscription and queues what arrives while it is away.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after this many events + defects.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop after this many seconds.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML with an [mqtt] table (credentials, TLS); the URL argument wins.")
def command(url, events, as_json, client_id, count, timeout, config_path) -> None:
    """Subscribe to the stations under an MQTT prefix and print statuses and defects."""
    settings = resolve(load_serve_config(config_path).replace(url=url, station="watch"))
    done = threading.Event()
    lock = threading.Lock()

    def show(r: Received) -> None:
        line = (json.dumps({"topic": r.topic, "station": r.station, "kind": r.kind, "retained": r.retained,
                            "payload": r.payload}, separators=(",", ":")) if as_json else format_line(r))
        with lock:
            click.echo(line)
            if count is not None and watcher.counts.events + watcher.counts.defects >= count:
                done.set()

    watcher = Watcher(settings, show, events=events, client_id=client_id)
    previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    watcher.start()
    end = time.monotonic() + timeout if timeout else None
    try:
        while not done.wait(0.2):
            if end is not None and time.monotonic() >= end:
                break
    finally:
        watcher.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    click.echo(f"watch: {json.dumps(watcher.counts.as_dict())}", err=True)
