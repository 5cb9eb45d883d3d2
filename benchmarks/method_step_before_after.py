"""FOCT's method step, this tree against an earlier commit: same scores, same admissions, how fast.

    python benchmarks/method_step_before_after.py --before dca00fa --size 336 --out benchmarks/results/foct_method_step

The earlier commit's ``runtime/`` is extracted with ``git archive`` into a temporary package and
imported beside this tree's. Per category of ``--data``: one backbone (``--engine``, default
auto) makes the features of a ``--shots`` support draw and of ``--frames`` test images, one bank
is fitted (this tree), and the method (``--method``, default foct/edge) is rebuilt from that bank's
arrays twice, before and after; both score the same frame stream online (episodic memory on, gate
= the bank's threshold), taking turns frame by frame. Per frame: largest relative score
difference, whether the admitted patches and the memory size are equal, and the method step's
wall and CPU time (``time.process_time``: this process's CPU seconds, less sensitive to a shared
box's load than wall time). Prints a table (machine, commit, load average); ``--out`` keeps it as
.md and .json.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from edge_foct.edge_app.evaluation.runner import load_foreground
from edge_foct.edge_app.inspect_session import open_backbone
from edge_foct.edge_app.machine_info import describe, machine_info
from edge_foct.runtime import atomic
from edge_foct.runtime.config import Config
from edge_foct.runtime.engines.choose import choose_engine
from edge_foct.runtime.fit import fit_bank
from edge_foct.runtime.image_io import list_images, read_image
from edge_foct.runtime.methods import make_params, method_class
from edge_foct.runtime.threads import apply_plan, plan_threads

REPO = Path(__file__).resolve().parents[1]


def import_before(commit: str, into: Path):
    """The commit's runtime/ as package ``before_<commit>.runtime`` -> its methods module."""
    pkg = f"before_{commit}"
    blob = subprocess.run(["git", "-C", str(REPO), "archive", commit, "runtime"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into / pkg, filter="data")
    (into / pkg / "__init__.py").write_text("")
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{pkg}.runtime.methods")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="commit to compare against")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--backbone", type=Path, default=None,
                    help="WRN-50-2 random-weights feature ONNX [default: benchmarks/wrn_random.py's, made once]")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--size", type=int, default=336)
    ap.add_argument("--method", default="foct/edge")
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"no data at {args.data}: nothing to compare")
        return
    from wrn_random import DEFAULT, ensure_wrn  # benchmarks/wrn_random.py (this script's folder is on sys.path)

    args.backbone = ensure_wrn(args.backbone or DEFAULT)
    plan = plan_threads(None)
    apply_plan(plan)
    name, preset = (args.method.split("/", 1) + [None])[:2]
    bb = open_backbone(args.backbone, choose_engine(None, args.engine, graph=args.backbone), plan)
    pre = bb.preprocessor(args.size, args.size)
    foreground, _ = load_foreground()
    rows = []
    with tempfile.TemporaryDirectory(prefix="before-") as tmp:
        before_methods = import_before(args.before, Path(tmp))
        for cat in sorted(p for p in args.data.iterdir() if (p / "train" / "good").is_dir()):
            train = list_images(cat / "train" / "good")
            rng = np.random.default_rng(0)
            support = [read_image(train[i]) for i in sorted(rng.choice(len(train), args.shots, replace=False))]
            test = [p for d in sorted((cat / "test").iterdir()) if d.is_dir() for p in list_images(d)]
            test = [test[i] for i in np.linspace(0, len(test) - 1, args.frames).astype(int)]  # good and defective
            cfg = Config().replace(input={"resize": pre.resize, "crop": pre.crop}, method={"name": name, "preset": preset})
            bank = fit_bank(bb, support, cfg, foreground=foreground if method_class(name).uses_foreground else None)
            arrays, params = bank.make_method().arrays(), make_params(name, None, preset)
            after = method_class(name).from_arrays(arrays, params)
            old_cls = before_methods.method_class(name)
            before = old_cls.from_arrays(arrays, before_methods.make_params(name, None, preset))
            for m in (before, after):
                m.set_gate(bank.threshold)
            feats = []
            for p in test:
                f = bb.features(pre.normalise(pre.crop_rgb(read_image(p))))[0]
                feats.append(np.ascontiguousarray(f.reshape(-1, f.shape[-1])))
            t = {"before": ([], []), "after": ([], [])}
            rel, same_adm, same_mem = [], 0, 0
            for f in feats:
                out = {}
                for label, m in (("before", before), ("after", after)):
                    w0, c0 = time.perf_counter(), time.process_time()
                    out[label] = m.score(f, update=True)
                    t[label][0].append((time.perf_counter() - w0) * 1e3)
                    t[label][1].append((time.process_time() - c0) * 1e3)
                b, a = out["before"], out["after"]
                rel.append(float(np.max(np.abs(a.scores - b.scores) / np.maximum(np.abs(b.scores), 1e-12))))
                same_adm += b.diagnostics.get("admitted_patches") == a.diagnostics.get("admitted_patches")
                same_mem += b.diagnostics.get("memory_size") == a.diagnostics.get("memory_size")
            med = {k: (float(np.median(v[0])), float(np.median(v[1]))) for k, v in t.items()}
            rows.append({"category": cat.name, "frames": len(feats), "max_rel_score_diff": max(rel),
                         "admissions_equal": same_adm, "memory_size_equal": same_mem,
                         "before_ms": med["before"], "after_ms": med["after"]})
            print(rows[-1], flush=True)
    machine = machine_info()
    commit, dirty = (machine["git"].get("commit") or "")[:10], bool(machine["git"].get("dirty"))
    head = (f"{describe(machine)}\n\n{args.method} method step, {args.before} (before) vs {commit} "
            f"(after{'+dirty' if dirty else ''}), "
            f"{bb.info.backbone_id} on {bb.engine.description}, {args.size} px, {args.shots}-shot bank, "
            f"{args.frames} frames per category online, interleaved frame by frame; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end\n")
    lines = ["| category | frames | max rel. score diff | admissions equal | memory size equal | before ms wall / CPU "
             "| after ms wall / CPU | speed-up (CPU) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['category']} | {r['frames']} | {r['max_rel_score_diff']:.1e} | {r['admissions_equal']}/"
                     f"{r['frames']} | {r['memory_size_equal']}/{r['frames']} | {r['before_ms'][0]:.1f} / "
                     f"{r['before_ms'][1]:.1f} | {r['after_ms'][0]:.1f} / {r['after_ms'][1]:.1f} | "
                     f"{r['before_ms'][1] / r['after_ms'][1]:.2f}x |")
    md = head + "\n" + "\n".join(lines) + "\n"
    print(md)
    if args.out:
        atomic.write_bytes(args.out / f"before_after_{args.size}.md", md.encode())
        atomic.write_json(args.out / f"before_after_{args.size}.json",
                          {"before": args.before, "after": commit, "size": args.size, "method": args.method,
                           "machine": machine, "load_average": os.getloadavg(), "rows": rows})


if __name__ == "__main__":
    main()
