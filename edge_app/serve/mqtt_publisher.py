"""A station's link to the plant's MQTT broker (paho-mqtt): events, defects, status, last will.

Topics (``P`` = the URL's prefix, ``S`` = the station id)::

    P/S/events    every frame's event (the events.jsonl fields + "station"), QoS 1
    P/S/defects   defective frames only: the event + "snapshot_path" (absolute), QoS 1
    P/S/status    retained, QoS 1, every ``status_every`` s: online, method, threshold, latency
                  percentiles, counters, outbox length; the last will (retained) sets online=false

The inference thread calls ``put(event)``: the frame's messages go to the on-disk outbox
(event_queue.py) and nothing else, so inspection never waits on the network. One publisher thread
hands the outbox's oldest entries to paho in order (at most ``window`` unacknowledged) and removes
each entry when the broker has acknowledged (PUBACK) all its messages. paho's own thread connects,
reconnects with back-off and, after a reconnect, resends what was unacknowledged; the publisher
hands nothing newer until those are acknowledged, so each station's messages stay in order.
Delivery is at least once: a message in flight when the link or the station dies is sent again,
and a subscriber drops repeats by (station, run, frame) (``edge-foct watch`` does).
"""

from __future__ import annotations

import json
import logging
import queue as queue_mod
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_foct.runtime.errors import EdgeFoctError

from edge_foct.edge_app.serve.event_queue import EventQueue, Message
from edge_foct.edge_app.serve.mqtt_config import BrokerSettings, apply_credentials

log = logging.getLogger("edge_foct.serve")

WINDOW = 64  # outbox entries handed to paho and not yet acknowledged
SYNC_EVERY = 0.5  # seconds between fsyncs of the outbox's new entries
POLL_S = 0.05  # seconds between looks at the outbox (put does not wake the publisher: see event_queue.put)


class MqttPublisher:
    def __init__(self, settings: BrokerSettings, outbox: Path, out: Path,
                 status: Callable[[], dict[str, Any]], run: str, window: int = WINDOW) -> None:
        self.settings, self.out, self.run_id, self.window = settings, Path(out).resolve(), run, window
        self._status = status
        url, station = settings.url, settings.station
        self.topics = {k: url.topic(station, k) for k in ("events", "defects", "status")}
        self.queue = EventQueue(outbox, settings.queue_max)
        if self.queue.restored:
            log.info("broker outbox %s: %d frames from an earlier run, sent first", outbox, self.queue.restored)
        self.state = "connecting"
        self.connects = 0
        self.reconnects = 0  # connections after the first
        self.published = 0  # outbox entries the broker acknowledged
        self.put_errors = 0
        self._connected = threading.Event()
        self._resync = False  # set by a disconnect: paho resends what was in flight before anything new
        self._acks: queue_mod.SimpleQueue[int] = queue_mod.SimpleQueue()
        self._closing = threading.Event()
        self._drain_timeout = 10.0
        self._client = self._make_client()
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)

    # -- set-up --------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.settings
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-foct-{s.station}",
                        clean_session=True, protocol=mqtt.MQTTv311)
        c.will_set(self.topics["status"], self._offline("connection lost (last will)"), qos=1, retain=True)
        apply_credentials(c, s)
        c.max_inflight_messages_set(0)  # the publisher bounds what is in flight (window)
        c.reconnect_delay_set(min_delay=1, max_delay=2)  # a broker back is used within 2 s: the backlog drains
        c.on_connect, c.on_disconnect, c.on_publish = self._on_connect, self._on_disconnect, self._on_publish
        c.on_connect_fail = self._on_connect_fail
        return c

    def start(self) -> None:
        s = self.settings
        try:
            self._client.connect_async(s.url.host, s.url.port, keepalive=s.keepalive)
        except (OSError, ValueError) as e:
            raise EdgeFoctError(f"MQTT {s.url}: {e}") from None
        self._client.loop_start()  # paho's thread: connect, keep alive, reconnect with back-off
        self._thread.start()
        log.info("MQTT: publishing to %s as station %r (outbox %s, at most %d frames)", s.url, s.station,
                 self.queue.folder, s.queue_max)

    # -- the inference thread --------------------------------------------------------------------
    def put(self, event: dict[str, Any]) -> None:
        """Queue this frame's messages on disk (never the network)."""
        payload = {**event, "station": self.settings.station}
        messages: list[Message] = [(self.topics["events"], json.dumps(payload, separators=(",", ":")))]
        if event.get("defective"):
            snap = event.get("snapshot")
            defect = {**payload, "snapshot_path": str(self.out / snap) if snap else None}
            messages.append((self.topics["defects"], json.dumps(defect, separators=(",", ":"))))
        if not self.queue.put(messages):
            self.put_errors += 1

    # -- paho's thread ---------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:  # bad credentials, not authorised: said once, retried with back-off
            if self.state != f"refused: {reason}":
                log.error("MQTT %s refused the connection: %s", self.settings.url, reason)
            self.state = f"refused: {reason}"
            return
        self.connects += 1
        self.reconnects = self.connects - 1
        self.state = "connected"
        log.info("MQTT: connected to %s%s", self.settings.url, " (again)" if self.reconnects else "")
        self._connected.set()
        self.queue.wake()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self._connected.clear()
        self._resync = True
        if not self._closing.is_set() and self.state == "connected":  # a refusal keeps its own words
            self.state = f"down ({reason})"
            log.warning("MQTT: lost %s (%s); queueing on disk, reconnecting", self.settings.url, reason)

    def _on_connect_fail(self, client, userdata) -> None:
        if self.state != "down (cannot connect)" and not self.state.startswith("refused"):
            log.warning("MQTT: cannot connect to %s (no broker there, or TLS refused); queueing on disk, retrying",
                        self.settings.url)
            self.state = "down (cannot connect)"

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        self._acks.put(mid)
        self.queue.wake()

    # -- the publisher thread --------------------------------------------------------------------
    def _run(self) -> None:
        owner: dict[int, int | None] = {}  # paho message id -> outbox entry (None: a status message)
        left: dict[int, int] = {}  # outbox entry -> messages not yet acknowledged, in hand-over order
        last_handed, next_status, next_sync, mark = -1, 0.0, 0.0, 0
        deadline = None
        try:
            while True:
                if time.monotonic() >= next_sync:  # the inference thread does not wait for the disk
                    self.queue.sync(before=mark)  # entries at least one round old and still unsent
                    mark = self.queue.next_seq
                    next_sync = time.monotonic() + SYNC_EVERY
                while True:  # acknowledgements: remove whole entries
                    try:
                        mid = self._acks.get_nowait()
                    except queue_mod.Empty:
                        break
                    seq = owner.pop(mid, None)
                    if seq is not None and seq in left:
                        left[seq] -= 1
                        if left[seq] == 0:
                            del left[seq]
                            self.queue.remove(seq)
                            self.published += 1
                if self._closing.is_set():
                    deadline = deadline or time.monotonic() + self._drain_timeout
                    if (not self._connected.is_set() or (not left and not len(self.queue))
                            or time.monotonic() > deadline):
                        break
                if not self._connected.is_set():
                    self._connected.wait(0.2)
                    continue
                if self._resync:
                    if left:  # paho resends these first; nothing newer until they are acknowledged
                        self.queue.wait_change(0.2)
                        continue
                    self._resync = False
                    last_handed = -1  # anything dropped from paho's hands goes again from the oldest
                now = time.monotonic()
                if now >= next_status and not self._closing.is_set():
                    info = self._client.publish(self.topics["status"], self._online(), qos=1, retain=True)
                    owner[info.mid] = None
                    next_status = now + self.settings.status_every
                room = self.window - len(left)
                entries = self.queue.peek(room, after=last_handed, timeout=POLL_S) if room > 0 else []
                if not entries and room <= 0:
                    self.queue.wait_change(0.1)
                for seq, messages in entries:
                    left[seq] = len(messages)
                    for topic, payload in messages:
                        owner[self._client.publish(topic, payload, qos=1).mid] = seq
                    last_handed = seq
        except Exception:  # a bug here must not take inspection down: the outbox keeps everything
            log.exception("MQTT publisher stopped; events stay in the outbox %s", self.queue.folder)
            self.state = "publisher failed (see log)"
        finally:
            self.queue.sync()

    def _online(self) -> str:
        s = self._status()
        return json.dumps({**s, "station": self.settings.station, "online": True, "time": round(time.time(), 3),
                           "run": self.run_id, "outbox": self.queue.stats()}, separators=(",", ":"))

    def _offline(self, reason: str) -> str:
        return json.dumps({"station": self.settings.station, "online": False, "reason": reason,
                           "run": self.run_id}, separators=(",", ":"))

    # -- shutdown --------------------------------------------------------------------------------
    def close(self, drain_timeout: float = 10.0) -> None:
        """Send what the outbox holds (up to ``drain_timeout`` s while the broker is there), mark the
        station offline (retained) and disconnect. Whatever is left stays on disk for the next run."""
        self._drain_timeout = drain_timeout
        self._closing.set()
        self.queue.wake()
        self._thread.join(drain_timeout + 5)
        if self._connected.is_set():
            info = self._client.publish(self.topics["status"], self._offline("stopped"), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=3)
            except (RuntimeError, ValueError):
                pass
            self._client.disconnect()
        self._client.loop_stop()
        self.queue.close()
        left = len(self.queue)
        if left:
            log.warning("MQTT: %d frames' messages stay in %s; they are sent when serve starts again",
                        left, self.queue.folder)
        self.state = "closed"

    def stats(self) -> dict[str, Any]:
        return {"url": str(self.settings.url), "station": self.settings.station, "broker": self.state,
                "connected": self._connected.is_set(), "reconnects": self.reconnects, "published": self.published,
                "queue": self.queue.stats()}
