"""Crash rate of `edge-foct serve --demo` under load: N runs, J at a time, native crashes counted.

Each run is the command of tests/edge_app/test_serve.py::test_demo_runs_in_one_command (fit a
2-shot demo bank, then serve 4 frames) in its own process, with glibc's heap checks on
(MALLOC_CHECK_=3, MALLOC_PERTURB_=165) and faulthandler on, so heap corruption aborts (rc -6)
or segfaults (rc -11) instead of passing silently. Running J processes at once on a small box is the
load that showed the crash. Prints one row per engine: runs, crashes (signal exits), other failures,
median and p95 wall time, machine and commit; crashed runs' stderr tails go to --keep::

    python benchmarks/serve_stress.py --backbone random.onnx --engines openvino,cpu --runs 24 --jobs 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edge_foct.edge_app.machine_info import describe, machine_info


MALLOC_DEBUG = "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"  # glibc >= 2.34: MALLOC_CHECK_ needs it


def core_limit() -> None:
    """In the child: core dumps on (a crash leaves ``core`` in the run's folder for gdb)."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def one_run(backbone: Path, engine: str, out: Path, extra: list[str], timeout: float,
            malloc_debug: bool = False, bank: Path | None = None, video: Path | None = None) -> tuple[int, float, str]:
    """(return code, wall seconds, stderr) of one demo serve in a fresh process, run in ``out``
    (``bank`` and ``video``: serve them instead of fitting the demo bank first)."""
    env = dict(os.environ, MALLOC_CHECK_="3", MALLOC_PERTURB_="165", PYTHONFAULTHANDLER="1")
    if malloc_debug and Path(MALLOC_DEBUG).is_file():
        env["LD_PRELOAD"] = MALLOC_DEBUG
    out.mkdir(parents=True, exist_ok=True)
    source = ["--demo", "--backbone", str(backbone), "--size", "64"] if bank is None else \
        ["--bank", str(bank), "--video", str(video), "--loop"]
    cmd = [sys.executable, "-X", "faulthandler", "-m", "edge_foct.edge_app", "serve", *source, "--no-dashboard",
           "--max-frames", "4", "--fps", "100", "--out", str(out), "--engine", engine, *extra]
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=out,
                           preexec_fn=core_limit)
        return r.returncode, time.perf_counter() - t, r.stderr
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return 124, time.perf_counter() - t, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", type=Path, help="feature ONNX for --demo (e.g. a random CNN)")
    ap.add_argument("--bank", type=Path, help="serve this bank (with --video) instead of --demo's fit")
    ap.add_argument("--video", type=Path, help="the video for --bank (looped)")
    ap.add_argument("--engines", default="openvino,cpu", help="comma-separated --engine values, interleaved")
    ap.add_argument("--runs", type=int, default=16, help="runs per engine")
    ap.add_argument("--jobs", type=int, default=8, help="runs at once")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--keep", type=Path, default=None, help="folder for crashed runs' stderr")
    ap.add_argument("--extra", default="", help="more serve options, space-separated")
    ap.add_argument("--malloc-debug", action="store_true",
                    help=f"preload {MALLOC_DEBUG} (without it glibc >= 2.34 ignores MALLOC_CHECK_)")
    args = ap.parse_args()
    if (args.bank is None) == (args.backbone is None) or (args.bank is None) != (args.video is None):
        ap.error("give --backbone (demo: fit, then serve) or --bank and --video (serve only)")
    engines = args.engines.split(",")
    jobs = [(e, i) for i in range(args.runs) for e in engines]  # interleaved: both see the same load
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        resolve = lambda p: p.resolve() if p is not None else None  # noqa: E731 (runs happen in their own folder)
        futures = {job: pool.submit(one_run, resolve(args.backbone), job[0], Path(tmp) / f"{job[0]}-{job[1]}",
                                    args.extra.split(), args.timeout, args.malloc_debug, resolve(args.bank),
                                    resolve(args.video)) for job in jobs}
        results = {job: f.result() for job, f in futures.items()}
        if args.keep:  # core files of crashed runs, for gdb
            args.keep.mkdir(parents=True, exist_ok=True)
            for core in Path(tmp).glob("*/core*"):
                shutil.move(str(core), args.keep / f"{core.parent.name}.{core.name}")
    print(f"machine: {describe(machine_info())}; {args.jobs} at a time; MALLOC_CHECK_=3 MALLOC_PERTURB_=165"
          f"{' + ' + MALLOC_DEBUG if args.malloc_debug else ''}")
    print("| engine | runs | crashes (signal) | other failures | median s | p95 s | return codes |")
    print("|---|---|---|---|---|---|---|")
    for e in engines:
        rows = [results[(e, i)] for i in range(args.runs)]
        rcs = [rc for rc, _, _ in rows]
        crashes = sum(rc < 0 or rc in (134, 139) for rc in rcs)
        other = sum(rc > 0 and rc not in (134, 139) for rc in rcs)
        secs = np.array([s for _, s, _ in rows])
        print(f"| {e} | {len(rows)} | {crashes} | {other} | {np.median(secs):.1f} | {np.percentile(secs, 95):.1f} | "
              f"{sorted(set(rcs))} |")
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for i, (rc, _, err) in enumerate(rows):
                if rc != 0:
                    (args.keep / f"{e.replace(':', '_')}-{i}-rc{rc}.err").write_text(err)


if __name__ == "__main__":
    main()
