"""``GET /metrics``: the station's health in Prometheus text format (prometheus_client).

Counters and gauges are read from the live status and the MQTT publisher when Prometheus scrapes
(one registry per app, never the process-global one); the per-stage latency histograms are fed by
the inference loop, one observation per frame and stage (queue, preprocess, backbone, method, map,
render, total, and ``outbox``: the on-disk write of the frame's broker messages).

    edge_foct_frames_total, edge_foct_defects_total, edge_foct_dropped_frames_total,
    edge_foct_source_reconnects_total, edge_foct_snapshot_errors_total, edge_foct_event_errors_total,
    edge_foct_threshold, edge_foct_source_up, edge_foct_info{station,method,run,backbone},
    edge_foct_stage_latency_seconds{stage} (histogram),
    edge_foct_mqtt_connected, edge_foct_mqtt_reconnects_total, edge_foct_mqtt_published_total,
    edge_foct_mqtt_queue_length, edge_foct_mqtt_queue_high_water, edge_foct_mqtt_queue_dropped_total
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from edge_foct.edge_app.serve.live import LiveStatus

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Snapshot(Collector):
    """Reads the live counters (and the publisher's, when there is one) at scrape time."""

    def __init__(self, live: LiveStatus, station: str, mqtt: Callable[[], dict[str, Any]] | None) -> None:
        self.live, self.station, self.mqtt = live, station, mqtt

    def collect(self) -> Iterator[Any]:
        s = self.live.status()
        c = s["counters"]
        for name, key, doc in (("frames", "frames", "Frames inspected"),
                               ("defects", "defects", "Frames judged defective"),
                               ("dropped_frames", "dropped", "Frames dropped because inference was behind"),
                               ("source_reconnects", "reconnects", "Times the source came back after a drop-out"),
                               ("snapshot_errors", "snapshot_errors", "Snapshots that could not be written"),
                               ("event_errors", "event_errors", "Event lines that could not be written")):
            yield CounterMetricFamily(f"edge_foct_{name}", doc, value=c.get(key, 0))
        yield GaugeMetricFamily("edge_foct_threshold", "The verdict threshold now", value=s["threshold"])
        yield GaugeMetricFamily("edge_foct_source_up", "1 while the source delivers frames",
                                value=float(s["source_status"] in ("starting", "running")))
        info = InfoMetricFamily("edge_foct", "This station")
        info.add_metric([], {"station": self.station, "method": str(s.get("method")), "run": str(s.get("run")),
                             "backbone": str(s.get("backbone"))})
        yield info
        if self.mqtt is None:
            return
        m = self.mqtt()
        q = m["queue"]
        yield GaugeMetricFamily("edge_foct_mqtt_connected", "1 while the broker connection is up",
                                value=float(m["connected"]))
        yield CounterMetricFamily("edge_foct_mqtt_reconnects", "Broker connections after the first",
                                  value=m["reconnects"])
        yield CounterMetricFamily("edge_foct_mqtt_published", "Frames whose messages the broker acknowledged",
                                  value=m["published"])
        yield GaugeMetricFamily("edge_foct_mqtt_queue_length", "Frames waiting in the on-disk outbox",
                                value=q["length"])
        yield GaugeMetricFamily("edge_foct_mqtt_queue_high_water", "Longest the outbox has been",
                                value=q["high_water"])
        yield CounterMetricFamily("edge_foct_mqtt_queue_dropped", "Frames dropped unsent: the outbox was full",
                                  value=q["overflowed"])


class StationMetrics:
    def __init__(self, live: LiveStatus, station: str, mqtt: Callable[[], dict[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Snapshot(live, station, mqtt))
        self.latency = Histogram("edge_foct_stage_latency_seconds", "Per-frame latency of each stage",
                                 ["stage"], buckets=BUCKETS, registry=self.registry)

    def observe(self, event: dict[str, Any]) -> None:
        """One frame's stage latencies (``event["latency_ms"]``)."""
        for stage, ms in event.get("latency_ms", {}).items():
            self.latency.labels(stage).observe(float(ms) / 1e3)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.latency.labels(stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
