"""The local web dashboard: a small WSGI app served by waitress (a production WSGI server).

Routes::

    /                  the page (static/index.html + app.js): live overlay, verdict, trend, latency
    /stream.mjpg       the live overlay as MJPEG (multipart/x-mixed-replace)
    /frame.jpg         the latest overlay, one JPEG; headers X-Frame-Id, X-Verdict, X-Score are that
                       frame's (the page shows the badge and the picture of the same frame)
    /snapshots/NAME    a snapshot of a defective frame (the names events carry), from OUT/snapshots
    /api/status        JSON: verdict, score, threshold, counters, latency percentiles, trend
    /api/events        JSON: the newest events (?limit=N, N <= 1000), or the first N after ?after=FRAME_ID
    /api/acks          GET: JSON {"acknowledged": [RUN-FRAME, ...], "earlier": [defect events of earlier
                       runs not acknowledged]}; POST {"run": RUN, "frame": N} (Content-Type application/json)
                       acknowledges one defect, kept in OUT/acknowledged.json (acks.py): every browser,
                       a reload and a restart agree
    /health            JSON: {"ok": true, ...}; 503 while the source is reconnecting or has ended
    /metrics           Prometheus text format (prometheus.py): counters, latency histograms, outbox

Bound to 127.0.0.1 unless the user passes another --host (and then a token). HEAD gets the headers
of GET and no body. http_guard.py checks the Host header and the token, and sets the server limits.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from waitress import wasyncore
from waitress.server import create_server

from edge_foct.runtime.errors import EdgeFoctError

from ..json_out import dumps
from .acks import RUN_ID, Acknowledgements
from .http_guard import HttpGuard, server_limits, host_header_name
from .live import LiveStatus
from .prometheus import CONTENT_TYPE as PROMETHEUS_TYPE

log = logging.getLogger("edge_foct.serve")

BOUNDARY = "edgefoctframe"
MAX_ACK_BODY = 1024  # bytes of a POST /api/acks body
MAX_STREAMS = 4  # MJPEG clients at once; each holds one server thread
SNAPSHOT_NAME = re.compile(r"[0-9A-Za-z]+-\d+_(frame\.png|overlay\.jpg)")  # Snapshots.save's names
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "application/javascript; charset=utf-8"),
          "/static/style.css": ("style.css", "text/css; charset=utf-8")}

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class DashboardApp:
    """The WSGI callable."""

    def __init__(self, live: LiveStatus, metrics: Callable[[], bytes] | None = None,
                 snapshots: Path | None = None, acks: Acknowledgements | None = None,
                 earlier: list[dict] | None = None) -> None:
        self.live, self.metrics = live, metrics
        self.snapshots = snapshots
        self.acks, self.earlier = acks, list(earlier or ())
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        self._static = {route: (resources.files(__package__).joinpath("static", name).read_bytes(), ctype)
                        for route, (name, ctype) in STATIC.items()}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "HEAD":
            return self._route(environ, start_response)
        if environ.get("PATH_INFO") == "/stream.mjpg":  # headers only: no stream slot, no frames
            start_response("200 OK", [("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}"),
                                      ("Cache-Control", "no-store")])
            return []
        body = self._route(environ, start_response)  # the GET headers (Content-Length included) ...
        if hasattr(body, "close"):
            body.close()
        return []  # ... and no body

    def _route(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")
        if path == "/api/acks" and method == "POST":
            return self._acknowledge(environ, start_response)
        if method not in ("GET", "HEAD"):
            return self._json(start_response, {"error": f"{method} not allowed"}, "405 Method Not Allowed")
        if path in self._static:
            body, ctype = self._static[path]
            return self._send(start_response, "200 OK", ctype, body)
        if path == "/api/status":
            return self._json(start_response, self.live.status())
        if path == "/api/events":
            q = parse_qs(environ.get("QUERY_STRING", ""))
            try:
                after = int(q["after"][0]) if "after" in q else None
                limit = min(max(int(q.get("limit", ["100"])[0]), 0), 1000)
            except ValueError:
                return self._json(start_response, {"error": "after and limit must be integers"}, "400 Bad Request")
            return self._json(start_response, {"events": self.live.events(after, limit)})
        if path == "/api/acks":
            names = self.acks.names() if self.acks is not None else []
            done = set(names)
            earlier = [e for e in self.earlier if f"{e['run']}-{e['frame']}" not in done]
            return self._json(start_response, {"acknowledged": names, "earlier": earlier})
        if path == "/health":
            s = self.live.status()
            ok = s["source_status"] in ("starting", "running")
            body = {"ok": ok, "source_status": s["source_status"], "frames": s["counters"]["frames"]}
            return self._json(start_response, body, "200 OK" if ok else "503 Service Unavailable")
        if path == "/metrics" and self.metrics is not None:
            return self._send(start_response, "200 OK", PROMETHEUS_TYPE, self.metrics())
        if path == "/frame.jpg":
            event, jpeg = self.live.latest_frame()
            if jpeg is None or event is None:
                return self._json(start_response, {"error": "no frame yet"}, "404 Not Found")
            score = event.get("score")
            return self._send(start_response, "200 OK", "image/jpeg", jpeg, [
                ("X-Frame-Id", str(event["frame"])), ("X-Verdict", "DEFECT" if event["defective"] else "OK"),
                ("X-Score", "nan" if score is None else f"{score:.6g}"),
                ("X-Threshold", f"{event['threshold']:.6g}")])
        if path.startswith("/snapshots/"):
            return self._snapshot(start_response, path[len("/snapshots/"):])
        if path == "/stream.mjpg":
            return self._mjpeg(start_response)
        return self._json(start_response, {"error": f"no route {path}"}, "404 Not Found")

    def _acknowledge(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """POST /api/acks {"run": RUN, "frame": N}. JSON only (a cross-site form cannot send it without
        a CORS preflight, which is never answered), and an Origin header, when sent, must name this
        dashboard's host (HttpGuard has checked Host and the token before)."""
        if self.acks is None:
            return self._json(start_response, {"error": "acknowledgements are not kept (no OUT folder)"},
                              "404 Not Found")
        ctype = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return self._json(start_response, {"error": "send Content-Type: application/json"},
                              "415 Unsupported Media Type")
        origin = environ.get("HTTP_ORIGIN")
        if origin is not None and host_header_name(origin.split("://", 1)[-1]) != host_header_name(
                environ.get("HTTP_HOST", "")):
            return self._json(start_response, {"error": f"origin {origin[:80]!r} is not this dashboard"},
                              "403 Forbidden")
        try:
            n = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            n = -1
        if not 0 < n <= MAX_ACK_BODY:
            return self._json(start_response, {"error": f"a body of 1 to {MAX_ACK_BODY} bytes is needed"},
                              "400 Bad Request")
        try:
            body = json.loads(environ["wsgi.input"].read(n))
            run, frame = body["run"], body["frame"]
            if not (isinstance(run, str) and RUN_ID.fullmatch(run) and isinstance(frame, int)
                    and not isinstance(frame, bool) and frame >= 0):
                raise ValueError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return self._json(start_response, {"error": 'send {"run": "YYYYMMDDTHHMMSSZ", "frame": N}'},
                              "400 Bad Request")
        try:
            kept = self.acks.add(run, frame)
        except OSError as e:
            return self._json(start_response, {"error": f"acknowledgement not saved: {e.strerror}"},
                              "507 Insufficient Storage")
        return self._json(start_response, {"ok": True, "acknowledged": kept})

    def _mjpeg(self, start_response: StartResponse) -> Iterable[bytes]:
        if not self._streams.acquire(blocking=False):
            return self._json(start_response, {"error": f"at most {MAX_STREAMS} live streams"},
                              "503 Service Unavailable")
        start_response("200 OK", [("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}"),
                                  ("Cache-Control", "no-store")])
        return self._frames()

    def _frames(self) -> Iterable[bytes]:
        seq = 0
        try:
            while not self.live.closed:
                new, jpeg = self.live.wait_frame(seq, timeout=1.0)
                if jpeg is None or new == seq:
                    continue
                seq = new
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                       .encode() + jpeg + b"\r\n")
        finally:  # the client left, or the server is closing
            self._streams.release()

    def _snapshot(self, start_response: StartResponse, name: str) -> list[bytes]:
        """A file of the snapshots folder by its bare name (no path: nothing outside it is reachable)."""
        ok = (self.snapshots is not None and SNAPSHOT_NAME.fullmatch(name) is not None)
        f = self.snapshots / name if ok else None
        if f is None or not f.is_file():
            return self._json(start_response, {"error": f"no snapshot {name[:80]!r}"}, "404 Not Found")
        try:
            body = f.read_bytes()
        except OSError:
            return self._json(start_response, {"error": "snapshot removed"}, "404 Not Found")
        return self._send(start_response, "200 OK", "image/jpeg" if name.endswith(".jpg") else "image/png", body)

    @staticmethod
    def _send(start_response: StartResponse, status: str, ctype: str, body: bytes,
              headers: list[tuple[str, str]] = ()) -> list[bytes]:
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-store"), *headers])
        return [body]

    def _json(self, start_response: StartResponse, obj: Any, status: str = "200 OK") -> list[bytes]:
        return self._send(start_response, status, "application/json", dumps(obj).encode())


class Dashboard:
    """waitress in a background thread; ``port`` is the bound port (pass 0 for a free one)."""

    def __init__(self, live: LiveStatus, host: str = "127.0.0.1", port: int = 8008, token: str | None = None,
                 allow_hosts: tuple[str, ...] = (), metrics: Callable[[], bytes] | None = None,
                 snapshots: Path | None = None, acks: Acknowledgements | None = None,
                 earlier: list[dict] | None = None) -> None:
        self.live = live
        self.app = DashboardApp(live, metrics, snapshots, acks, earlier)
        try:
            self.server = create_server(HttpGuard(self.app, host, token, allow_hosts), host=host, port=port,
                                        threads=MAX_STREAMS + 4, ident="edge-foct", **server_limits())
        except OSError as e:
            raise EdgeFoctError(f"dashboard cannot listen on {host}:{port} ({e.strerror}); pass another "
                                f"--port (0: any free one) or --no-dashboard") from None
        self.host, self.port = host, int(self.server.effective_port)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dashboard", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        """waitress's event loop (``server.run``), one poll at a time until ``stop``; then the server and
        every connection are closed here, in the loop's own thread: closed from another thread, a
        select() still waiting on them failed with EBADF (a traceback at every SIGTERM with a viewer)."""
        srv = self.server
        while not self._closing.is_set():
            srv.asyncore.loop(timeout=srv.adj.asyncore_loop_timeout, map=srv._map, use_poll=srv.adj.asyncore_use_poll,
                              count=1)
        srv.close()
        wasyncore.close_all(srv._map, ignore_all=True)

    def stop(self) -> None:
        self.live.close()  # ends every MJPEG response; their threads finish while the loop still runs
        self.server.task_dispatcher.shutdown(timeout=5)
        self._closing.set()
        if self._thread.is_alive():
            try:
                self.server.pull_trigger()  # wakes the loop's select() at once
            except OSError:  # EBADF: the loop saw _closing first and closed the trigger: nothing to wake
                pass
            self._thread.join(timeout=5)
        else:
            self.server.close()
