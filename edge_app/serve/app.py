"""The serving app: session + saved state + capture thread + inference loop + dashboard.

``ServeApp(options, source).start()`` returns once everything runs; ``wait()`` until the loop
stops by itself (the source ended, --max-frames) and ``stop()`` to shut it all down (the state
is saved on the way out). The CLI (edge_app/serve_cmd.py) adds the signal handling.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_foct.runtime import atomic, names
from edge_foct.runtime.threads import ThreadPlan
from edge_foct.runtime.threshold import StreamThreshold, Threshold

from ..inspect_session import open_session
from .dashboard import Dashboard
from .live import LiveStatus
from .loop import InferenceLoop, LoopResult
from .outputs import EventLog, Snapshots
from .sources import CaptureThread, Source
from .state import CorruptState, StateStore

log = logging.getLogger("edge_foct.serve")


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
    engine: str = "auto"  # backbone engine (runtime/engines/choose.py)
    threads: ThreadPlan | None = None  # the process's thread plan (runtime/threads.py), applied by the command


class ServeApp:
    def __init__(self, options: ServeOptions, source: Source,
                 snapshot_writer: Callable[[Path, bytes], None] = atomic.write_bytes,
                 stop_event: threading.Event | None = None) -> None:
        self.options, self.source, self._writer = options, source, snapshot_writer
        self.stop_event = stop_event or threading.Event()  # shared with a source that waits (folders)
        self.result: LoopResult | None = None
        self.error: BaseException | None = None  # what stopped the loop, if it crashed
        self.dashboard: Dashboard | None = None
        self._done = threading.Event()

    def start(self) -> None:
        o = self.options
        session = open_session(o.bank, o.backbone, o.threshold, online=o.online, engine_dir=o.engines,
                               compute=o.compute, engine=o.engine, plan=o.threads)
        bank, inspector = session.bank, session.inspector
        learnt = Threshold.from_json(bank.manifest["threshold"])
        stream = None
        if o.threshold is None and o.adapt:
            if learnt.floor is None:
                log.warning("bank threshold rule %r has no stream bounds: threshold fixed (re-fit to enable)",
                            learnt.rule)
            else:
                stream = StreamThreshold(learnt)
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
            stream = StreamThreshold(learnt) if stream is not None else None
        if stream is not None:
            inspector.threshold = stream.value
        inspector.method.set_gate(stream.gate if stream is not None else inspector.threshold)
        rule = "user override" if o.threshold is not None else learnt.rule
        adapt = (f"stream rule within [{stream.floor:.4g}, {stream.ceiling:.4g}], now {stream.value:.4g} "
                 f"from {stream.accepted} stream scores" if stream else "fixed")
        log.info("threshold %.4g (%s, from %d support images); %s", learnt.value if o.threshold is None
                 else o.threshold, rule, len(bank.manifest.get("support", [])), adapt)
        log.info("warm-up frame: %.0f ms (engines and kernels ready before the first real frame)",
                 inspector.warm_up())
        self.source.open()  # a camera that does not exist fails here, before any thread starts
        run = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        info = {"source": self.source.name, "bank": str(o.bank), "method": bank.method_name,
                "online": inspector.online, "threshold": inspector.threshold, "threshold_rule": rule,
                "threshold_start": learnt.value if o.threshold is None else o.threshold,
                "threshold_adapt": adapt, "state": state_msg, "run": run, "warning": session.warning,
                "backbone": bank.manifest["backbone"]["id"]}
        self.live = LiveStatus(info)
        self.capture = CaptureThread(self.source, o.queue, lossless=o.lossless, backoff=o.backoff)
        self.loop = InferenceLoop(session, self.capture, self.live, EventLog(o.out / "events.jsonl"),
                                  Snapshots(o.out / "snapshots", run, o.keep_snapshots, self._writer), store,
                                  stream, run, o.save_every, o.max_frames, o.show)
        if o.dashboard:
            try:
                self.dashboard = Dashboard(self.live, o.host, o.port)
            except BaseException:
                self.source.close()
                raise
            self.dashboard.start()
            log.info("dashboard on %s", self.dashboard.url)
        self.capture.start()
        self._thread = threading.Thread(target=self._run_loop, name="inference", daemon=True)
        self._thread.start()

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
        self.capture.join(timeout=5)
        if self.error is not None:
            raise self.error
        return self.result
