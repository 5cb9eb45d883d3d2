"""The plant-side view of the stations: subscribe to ``PREFIX/+/status`` and ``PREFIX/+/defects``
(and ``PREFIX/+/events`` on request) and hand each message on once.

QoS 1 is at least once: a message in flight when a link or a station died comes again. Repeats of
an event or defect are recognised by (station, topic kind, run id, frame id) and dropped (counted);
statuses are state, passed on every time. With a ``client_id`` the broker keeps the subscription
and queues what arrives while the watcher is away (a persistent session), so a watcher that
reconnects misses nothing the broker kept.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from edge_foct.edge_app.serve.mqtt_config import BrokerSettings, apply_credentials

log = logging.getLogger("edge_foct.watch")

KINDS = ("status", "defects", "events")
SEEN_MAX = 1_000_000  # (station, kind, run, frame) keys remembered for the de-duplication


@dataclass
class Received:
    station: str
    kind: str  # "status" | "defects" | "events"
    topic: str
    payload: dict[str, Any]
    retained: bool


@dataclass
class WatchCounts:
    status: int = 0
    events: int = 0
    defects: int = 0
    duplicates: int = 0
    not_json: int = 0
    per_station: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "events": self.events, "defects": self.defects,
                "duplicates": self.duplicates, "not_json": self.not_json}


class Watcher:
    def __init__(self, settings: BrokerSettings, on_message: Callable[[Received], None], events: bool = False,
                 client_id: str | None = None) -> None:
        self.settings, self.handler = settings, on_message
        self.kinds = KINDS if events else KINDS[:2]
        self.counts = WatchCounts()
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        self._seen: OrderedDict[tuple, None] = OrderedDict()
        self._lock = threading.Lock()
        self._stopping = False
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"edge-foct-watch-{uuid.uuid4().hex[:8]}",
                        clean_session=client_id is None, protocol=mqtt.MQTTv311)
        apply_credentials(c, settings)
        c.reconnect_delay_set(min_delay=1, max_delay=2)
        c.on_connect, c.on_disconnect, c.on_message = self._on_connect, self._on_disconnect, self._on_message
        c.on_subscribe = self._on_subscribe
        self._client = c

    def start(self) -> None:
        self._client.connect_async(self.settings.url.host, self.settings.url.port, keepalive=self.settings.keepalive)
        self._client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            log.error("watch: %s refused the connection: %s", self.settings.url, reason)
            return
        self.connected.set()
        log.info("watch: connected to %s%s", self.settings.url, " (session kept)" if flags.session_present else "")
        client.subscribe([(self.settings.url.topic("+", k), 1) for k in self.kinds])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        log.info("watch: subscribed to %s", ", ".join(self.settings.url.topic("+", k) for k in self.kinds))
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self.connected.clear()
        if not self._stopping:
            log.warning("watch: lost %s (%s); reconnecting", self.settings.url, reason)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 2 or parts[-1] not in self.kinds:
            return
        station, kind = parts[-2], parts[-1]
        try:
            payload = json.loads(msg.payload)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            with self._lock:
                self.counts.not_json += 1
            log.warning("watch: %s: payload is not a JSON object; skipped", msg.topic)
            return
        with self._lock:
            if kind != "status":
                key = (station, kind, payload.get("run"), payload.get("frame"))
                if key in self._seen:
                    self.counts.duplicates += 1
                    return
                self._seen[key] = None
                if len(self._seen) > SEEN_MAX:
                    self._seen.popitem(last=False)
            setattr(self.counts, kind, getattr(self.counts, kind) + 1)
        self.handler(Received(station, kind, msg.topic, payload, bool(msg.retain)))


def format_line(r: Received) -> str:
    """One human-readable line per message."""
    p = r.payload
    if r.kind == "status":
        if not p.get("online"):
            return f"{r.station:<16} OFFLINE  {p.get('reason', '')}  run {p.get('run')}"
        lat, c, box = p.get("latency_ms") or {}, p.get("counters") or {}, p.get("outbox") or {}
        thr = p.get("threshold")
        return (f"{r.station:<16} online   {p.get('method')}  threshold {thr:.4g}  frames {c.get('frames')} "
                f"defects {c.get('defects')}  p50/p95 {lat.get('p50')}/{lat.get('p95')} ms  "
                f"outbox {box.get('length')}" if isinstance(thr, (int, float)) else
                f"{r.station:<16} online   {p.get('method')}")
    if r.kind == "defects":
        return (f"{r.station:<16} DEFECT   frame {p.get('frame')}  score {p.get('score')} > {p.get('threshold')}  "
                f"{p.get('snapshot_path') or '(no snapshot)'}")
    return (f"{r.station:<16} {'DEFECT' if p.get('defective') else 'ok':<8} frame {p.get('frame')}  "
            f"score {p.get('score')}")
