"""The serving app: session + saved state + capture thread + inference loop + dashboard (+ /metrics,
and with ``mqtt`` the broker publisher: mqtt_publisher.py).

``ServeApp(options, source).start()`` returns once everything runs; ``wait()`` until the loop
stops by itself (the source ended, --max-frames) and ``stop()`` to shut it all down (the state
is saved on the way out). The CLI (edge_app/commands/serve.py) adds the signal handling.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_foct.runtime import atomic, names
from edge_foct.runtime.threads import ThreadPlan
from edge_foct.runtime.threshold import StreamParams, StreamThreshold, Threshold, stream_k

from ..inspect_session import open_session
from .acks import Acknowledgements, earlier_defects
from .dashboard import Dashboard
from .live import LiveStatus
from .loop import InferenceLoop, LoopResult
from .mqtt_config import BrokerSettings
from .mqtt_publisher import MqttPublisher
from .out_lock import OutLock
from .outputs import EventLog, Snapshots
from .prometheus import StationMetrics
from .sources import CaptureThread, Source, SourceError
from .state import CorruptState, StateStore

log = logging.getLogger("edge_foct.serve")
#: how long stop() waits for the capture thread after the inference loop ended
CAPTURE_JOIN_S = 5.0


@dataclass(frozen=True)
class ServeOptions:
    bank: Path
    out: Path
    backbone: str | None = None
    threshold: float | None = None  # user override: fixed, no stream rule
    adapt: bool = True  # stream rule (runtime/threshold.py StreamThreshold) on top of the bank's threshold
    host: str = "127.0.0.1"
    port: int = 8008
    dashboard: bool = True
    save_every: float = 30.0  # seconds between saves of the learnt state
    queue: int = 2
    backoff: tuple[float, float] = (0.5, 8.0)  # seconds: first and longest wait before a reconnect
    lossless: bool = False  # block the capture instead of dropping frames (files)
    max_frames: int | None = None
    online: bool = True
    show: bool = False
    keep_snapshots: int = 500
    state: Path | None = None  # default: <out>/episodic.npz (names.EPISODIC_STATE)
    engines: Path | None = None  # TensorRT engines from `edge-foct build-engines` (used when they fit here)
    compute: str = "auto"  # transport maths: "auto" | "numpy" | "cuda"
    mqtt: BrokerSettings | None = None  # publish events, defects and status to this broker (mqtt_publisher.py)
    token: str | None = None  # dashboard access token (http_guard.py); required beyond loopback
    allow_hosts: tuple[str, ...] = ()  # more names the dashboard answers to in the Host header
    calibrate_frames: int = StreamParams.frames  # the stream rule's calibration from the first N frames
    engine: str = "auto"  # backbone engine (runtime/engines/choose.py)
    threads: ThreadPlan | None = None  # the process's thread plan (runtime/threads.py), applied by the command


class ServeApp:
    def __init__(self, options: ServeOptions, source: Source,
                 snapshot_writer: Callable[[Path, bytes], None] = atomic.write_bytes,
                 stop_event: threading.Event | None = None, lock: OutLock | None = None) -> None:
        self.options, self.source, self._writer = options, source, snapshot_writer
        self.lock = lock  # one serve per --out (out_lock.py); taken in start() unless the caller holds it
        self.stop_event = stop_event or threading.Event()  # shared with a source that waits (folders)
        self.result: LoopResult | None = None
        self.error: BaseException | None = None  # what stopped the loop, if it crashed
        self.dashboard: Dashboard | None = None
        self.publisher: MqttPublisher | None = None
        self._done = threading.Event()

    def start(self) -> None:
        o = self.options
        if self.lock is None:
            self.lock = OutLock(o.out).acquire()
        try:
            self._start()
        except BaseException:
            self.lock.release()
            raise

    def _start(self) -> None:
        o = self.options
        session = open_session(o.bank, o.backbone, o.threshold, online=o.online, engine_dir=o.engines,
                               compute=o.compute, engine=o.engine, plan=o.threads)
        bank, inspector = session.bank, session.inspector
        learnt = Threshold.from_json(bank.manifest["threshold"])
        stream = None
        # the stream rule (runtime/threshold.py), k for the bank's support size (K images; none: zero-shot)
        support_size = len(bank.manifest.get("support") or ()) or None
        params = StreamParams(frames=o.calibrate_frames, k=stream_k(support_size))
        if o.threshold is None and o.adapt:
            if learnt.floor is None:
                log.warning("bank threshold rule %r has no stream bounds: threshold fixed (re-fit to enable)",
                            learnt.rule)
            else:
                stream = StreamThreshold(learnt, params)
        store = StateStore(o.state or o.out / names.EPISODIC_STATE, bank.manifest["arrays_sha256"],
                           bank.method_name)
        try:
            state_msg = store.restore(inspector.method, stream)
            log.info("%s", state_msg)
        except CorruptState as e:
            state_msg = str(e)
            log.error("%s", e)
            inspector.method = bank.make_method()  # nothing of the unusable file survives
            inspector.method.use_backend(session.compute)
            stream = StreamThreshold(learnt, params) if stream is not None else None
        if stream is not None:
            inspector.threshold = stream.value
        inspector.method.set_gate(stream.gate if stream is not None else inspector.threshold)
        rule = "user override" if o.threshold is not None else learnt.rule
        adapt = ((f"calibrated from the first {stream.params.frames} frames: {stream.value:.4g}" if stream.calibrated
                  else f"calibrating from the first {stream.params.frames} frames ({stream.accepted} so far), "
                       f"then fixed") if stream else "fixed")
        log.info("threshold %.4g (%s, from %d support images); %s", learnt.value if o.threshold is None
                 else o.threshold, rule, len(bank.manifest.get("support", [])), adapt)
        log.info("warm-up frame: %.0f ms (engines and kernels ready before the first real frame)",
                 inspector.warm_up())
        try:
            self.source.open()  # a camera that does not exist fails here, before any thread starts
        except SourceError as e:
            if not (self.source.live and e.retry):
                raise
            # down at start-up (a busy camera, an RTSP stream not up yet): the capture thread retries
            # with the same back-off as after a drop-out; /health says 503 meanwhile
            log.warning("%s; retrying every %.1f s up to %.0f s, as after a drop-out", e, *o.backoff)
        run = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        info = {"source": self.source.name, "bank": str(o.bank), "method": bank.method_name,
                "online": inspector.online, "threshold": inspector.threshold, "threshold_rule": rule,
                "threshold_start": learnt.value if o.threshold is None else o.threshold,
                "threshold_adapt": adapt, "state": state_msg, "run": run, "warning": session.warning,
                "backbone": bank.manifest["backbone"]["id"],
                "threshold_warning": None if o.threshold is not None or (stream is not None and stream.calibrated)
                else bank.manifest["threshold"].get("warning")}
        self.live = LiveStatus(info)
        self.capture = CaptureThread(self.source, o.queue, lossless=o.lossless, backoff=o.backoff)
        sinks = self._outlets(run)
        self.loop = InferenceLoop(session, self.capture, self.live, EventLog(o.out / "events.jsonl"),
                                  Snapshots(o.out / "snapshots", run, o.keep_snapshots, self._writer), store,
                                  stream, run, o.save_every, o.max_frames, o.show, sinks)
        if o.dashboard:
            try:
                acks = Acknowledgements(o.out)
                self.dashboard = Dashboard(self.live, o.host, o.port, o.token, o.allow_hosts, metrics=self.metrics.render,
                                           snapshots=o.out / "snapshots", acks=acks,
                                           earlier=earlier_defects(o.out / "events.jsonl", acks, run))
                self.live.sections["acknowledged"] = acks.__len__  # the page refetches /api/acks when it moves
            except BaseException:
                self.source.close()
                if self.publisher is not None:
                    self.publisher.close(drain_timeout=0)
                raise
            self.dashboard.start()
            log.info("dashboard on %s", self.dashboard.url)
        self.capture.start()
        self._thread = threading.Thread(target=self._run_loop, name="inference", daemon=True)
        self._thread.start()

    def _outlets(self, run: str) -> list[Callable[[dict], None]]:
        """Prometheus metrics (always) and the broker outbox (with ``mqtt``): where each event also goes."""
        o = self.options
        station = o.mqtt.station if o.mqtt else socket.gethostname().split(".")[0]
        if o.mqtt is not None:
            self.publisher = MqttPublisher(o.mqtt, o.out / "mqtt-outbox", o.out, self._broker_status, run)
            self.live.sections["mqtt"] = self.publisher.stats
        self.metrics = StationMetrics(self.live, station, self.publisher.stats if self.publisher else None)
        if self.publisher is None:
            return [self.metrics.observe]
        self.publisher.start()
        publisher, metrics = self.publisher, self.metrics

        def to_broker(event: dict) -> None:
            t = time.perf_counter()
            publisher.put(event)  # a local file write: inspection never waits on the network
            metrics.observe_stage("outbox", time.perf_counter() - t)

        return [self.metrics.observe, to_broker]

    def _broker_status(self) -> dict:
        s = self.live.status()
        keys = ("method", "threshold", "threshold_rule", "source", "source_status", "latency_ms", "fps", "counters",
                "backbone", "uptime_s")
        return {"learns_online": s.get("online"), **{k: s.get(k) for k in keys}}

    def _run_loop(self) -> None:
        try:
            self.result = self.loop.run(self.stop_event)
        except BaseException as e:  # handed to the caller of stop(); the state was saved on the way out
            self.error = e
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the loop has stopped (by itself or through ``stop``)."""
        return self._done.wait(timeout)

    def stop(self) -> LoopResult | None:
        self.stop_event.set()
        self.capture.stop()
        self._thread.join()
        if self.dashboard is not None:
            self.dashboard.stop()
        if self.publisher is not None:
            self.publisher.close()  # sends what is queued while the broker is there (bounded wait)
        self.capture.join(timeout=CAPTURE_JOIN_S)
        if self.capture.is_alive():  # a camera read blocked in the driver: the daemon thread ends with the process
            log.warning("the capture thread of %s did not stop within %.0f s (a read blocked in the camera "
                        "or FFmpeg); exiting without it: nothing unsaved depends on it", self.capture.source.name,
                        CAPTURE_JOIN_S)
        if self.lock is not None:
            self.lock.release()
        if self.error is not None:
            raise self.error
        return self.result
