"""``edge-foct serve``: inspect a camera, video, RTSP stream or folder; events, snapshots, dashboard.

Exactly one source: ``--camera N``, ``--video FILE``, ``--rtsp URL``, ``--folder DIR`` or ``--demo``
(a built-in stream and bank, no camera needed). Stops on SIGINT/SIGTERM, at the end of a video
(unless ``--loop``) or after ``--max-frames``, and saves what the stream taught on the way out.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click
import cv2

from edge_foct.edge_app.commands.options import INPUT_SIZE, METHOD, NON_NEGATIVE_INT, PORT, POSITIVE_FLOAT, POSITIVE_INT
from edge_foct.edge_app.commands.run_options import engine_option, start_threads, threads_option
from edge_foct.edge_app.commands.value_types import FINITE
from edge_foct.edge_app.serve.app import ServeApp, ServeOptions
from edge_foct.edge_app.serve.demo import prepare_demo
from edge_foct.edge_app.serve.http_guard import TOKEN_ENV, check_bind
from edge_foct.edge_app.serve.mqtt_config import load_serve_config, resolve
from edge_foct.edge_app.serve.out_lock import OutLock
from edge_foct.edge_app.serve.sources import FOLDER_STATE, CaptureSource, FolderSource
from edge_foct.runtime.errors import EdgeFoctError

log = logging.getLogger("edge_foct.serve")


def _window_available() -> bool:
    """Decide once whether --show can open a window (headless OpenCV builds and SSH sessions cannot)."""
    try:
        cv2.namedWindow("edge-foct", cv2.WINDOW_NORMAL)
        return True
    except cv2.error:
        log.warning("--show: no display or no GUI support in this OpenCV build; serving without a window")
        return False


@click.command("serve")
@click.option("--bank", "bank_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Bank folder from `edge-foct fit` (--demo fits one).")
@click.option("--camera", type=int, default=None, help="Camera index (V4L2 /dev/videoN).")
@click.option("--video", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Video file.")
@click.option("--rtsp", default=None, help="RTSP URL of a network camera.")
@click.option("--folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder: its images in name order, then new files as they arrive.")
@click.option("--demo", is_flag=True, help="A built-in demo stream and a bank fitted on 2 good parts.")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="--demo: an MVTec-layout category to make the stream from (default: generated parts).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("edge-foct-serve"),
              show_default=True, help="events.jsonl, snapshots/, episodic.npz go here.")
@click.option("--backbone", default=None, help="Feature ONNX (with --bank: the same file, same sha256).")
@click.option("--method", type=METHOD, default=None, help="--demo: the method to fit (default patchcore).")
@click.option("--size", type=INPUT_SIZE, default=256, show_default=True, help="--demo: input size (a multiple of 16).")
@click.option("--threshold", type=FINITE, default=None, help="Fixed threshold (overrides the learnt one; a finite number).")
@click.option("--fixed-threshold", is_flag=True, help="Keep the bank's threshold; no stream rule.")
@click.option("--calibrate-frames", type=click.IntRange(min=1), default=50, show_default=True,
              help="Calibrate the threshold from the first N frames (mostly good parts; a few defects are "
                   "tolerated), then hold it. Until then the bank's threshold judges.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Dashboard address (0.0.0.0: every interface; needs --token).")
@click.option("--port", type=PORT, default=8008, show_default=True, help="Dashboard port (0: any free one).")
@click.option("--token", envvar=TOKEN_ENV, default=None, show_envvar=True,
              help="Access token for the dashboard (required beyond loopback): ?token=... or a Bearer header.")
@click.option("--allow-host", "allow_hosts", multiple=True,
              help="Another name the dashboard answers to in the Host header (repeatable), e.g. station.lan.")
@click.option("--no-dashboard", is_flag=True, help="Headless: no HTTP server.")
@click.option("--fps", type=POSITIVE_FLOAT, default=None,
              help="Play a video at this rate, dropping frames when behind (default: every frame, as fast as possible).")
@click.option("--loop", "loop_video", is_flag=True, help="Replay the video when it ends.")
@click.option("--max-frames", type=POSITIVE_INT, default=None, help="Stop after this many frames.")
@click.option("--save-every", type=POSITIVE_FLOAT, default=30.0, show_default=True,
              help="Seconds between saves of the learnt state.")
@click.option("--queue", type=POSITIVE_INT, default=2, show_default=True, help="Frames buffered between capture and inference.")
@click.option("--offline", is_flag=True, help="Online methods: do not learn from the stream.")
@click.option("--show", is_flag=True, help="Also show the overlay in a local window, where a display exists.")
@click.option("--keep-snapshots", type=NON_NEGATIVE_INT, default=500, show_default=True,
              help="Snapshots kept in --out/snapshots across runs (the oldest are removed; 0: none written).")
@click.option("--engines", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="TensorRT engines from `edge-foct build-engines`: used when built here from this backbone.")
@click.option("--compute", type=click.Choice(["auto", "numpy", "cuda"]), default="auto", show_default=True,
              help="Transport maths: CUDA kernels (auto: when a GPU is usable) or the NumPy reference.")
@click.option("--mqtt", "mqtt_url", default=None, metavar="URL",
              help="Publish events, defects and status to an MQTT broker: mqtt://HOST:PORT/PREFIX (mqtts:// for TLS).")
@click.option("--station", default=None, help="--mqtt: this station's id in the topics, unique on the broker (default: the host name).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML with an [mqtt] table: url, station, username, password_file, ca, cert, key, queue_max.")
@engine_option
@threads_option
def command(**opts) -> None:
    """Inspect a live source: verdicts, event log, snapshots and a local dashboard."""
    chosen = [f"--{n}" for n in ("camera", "video", "rtsp", "folder") if opts[n] is not None]
    chosen += ["--demo"] if opts["demo"] else []
    if len(chosen) != 1:
        raise EdgeFoctError(f"give exactly one source (--camera, --video, --rtsp, --folder or --demo), got "
                            f"{', '.join(chosen) or 'none'}")
    mqtt_cfg = load_serve_config(opts.pop("config_path")).replace(url=opts.pop("mqtt_url"), station=opts["station"])
    if opts.pop("station") is not None and not mqtt_cfg.url:
        raise EdgeFoctError("--station names this station on the broker: give --mqtt URL too")
    broker = resolve(mqtt_cfg) if mqtt_cfg.url else None
    bind_warning = None if opts["no_dashboard"] else check_bind(opts["host"], opts["token"])  # before any work
    lock = OutLock(opts["out"]).acquire()  # a read-only or busy --out fails here, in one line
    try:
        _serve(lock, bind_warning, broker, **opts)
    finally:
        lock.release()


def _serve(lock, bind_warning, broker, bank_dir, camera, video, rtsp, folder, demo, data, out, backbone, method, size,
           threshold, fixed_threshold, calibrate_frames, host, port, token, allow_hosts, no_dashboard, fps, loop_video,
           max_frames, save_every, queue, offline, show, keep_snapshots, engines, compute, engine, threads) -> None:
    plan = start_threads(threads)
    if demo:
        video, demo_bank = prepare_demo(out / "demo", data, backbone, size, method, engine, plan)
        bank_dir, fps, loop_video = bank_dir or demo_bank, fps or 4.0, True
    if bank_dir is None:
        raise EdgeFoctError("--bank DIR is required (make one with `edge-foct fit`), or try --demo")
    stop = threading.Event()
    if camera is not None:
        source = CaptureSource(camera, "camera")
    elif rtsp is not None:
        source = CaptureSource(rtsp, "rtsp")
    elif folder is not None:
        source = FolderSource(folder, stop=stop, state=out / FOLDER_STATE)
    else:
        source = CaptureSource(video, "video", fps=fps, loop=loop_video)
    options = ServeOptions(bank=bank_dir, out=out, backbone=backbone, threshold=threshold,
                           adapt=not fixed_threshold, host=host, port=port, dashboard=not no_dashboard,
                           save_every=save_every, queue=queue, lossless=folder is not None or (video is not None and not fps),
                           max_frames=max_frames, online=not offline, show=show and _window_available(),
                           keep_snapshots=keep_snapshots, engines=engines, compute=compute, token=token,
                           allow_hosts=tuple(allow_hosts), mqtt=broker, calibrate_frames=calibrate_frames,
                           engine=engine, threads=plan)
    app = ServeApp(options, source, stop_event=stop, lock=lock)
    app.start()
    if bind_warning:
        log.warning("%s", bind_warning)
    if app.dashboard is not None:
        click.echo(f"dashboard: {app.dashboard.url}  (Ctrl-C to stop)", err=True)

    def _stop(signum, _frame) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        app.stop_event.set()

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not app.wait(0.5):
            pass
    finally:
        result = app.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    c = app.live.counters
    click.echo(f"{result.frames} frames ({result.reason}): {c['defects']} defective, {c['dropped']} dropped, "
               f"{c['reconnects']} reconnects, {c['snapshots']} snapshots ({c['snapshot_errors']} failed), "
               f"threshold {app.live.threshold:.4g} -> {out / 'events.jsonl'}")
    if app.publisher is not None:
        q = app.publisher.queue.stats()
        click.echo(f"MQTT {broker.url}: {app.publisher.published} frames acknowledged, {q['length']} left in the "
                   f"outbox (most {q['high_water']}, {q['overflowed']} dropped when full), "
                   f"{app.publisher.reconnects} reconnects")
