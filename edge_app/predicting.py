"""Score image files with an open session: results.jsonl, 16-bit maps and overlays (predict, demo)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm import tqdm

from edge_foct.edge_app.inspect_session import Session
from edge_foct.edge_app.json_out import dumps
from edge_foct.edge_app.out_dir import clear_predict_outputs, ensure_writable
from edge_foct.edge_app.render import encode_png, map_png16, overlay_bgr
from edge_foct.runtime import atomic
from edge_foct.runtime.errors import ImageError
from edge_foct.runtime.image_io import read_image

log = logging.getLogger("edge_foct.predict")


def output_stem(path: Path, taken: set[str]) -> str:
    """'<parent>_<stem>', unique within one run (MVTec test folders reuse file names)."""
    stem = f"{path.parent.name}_{path.stem}"
    name, k = stem, 1
    while name in taken:
        k += 1
        name = f"{stem}-{k}"
    taken.add(name)
    return name


def predict_images(session: Session, paths: list[Path], out: Path, progress: bool = True) -> list[dict]:
    """Inspect each image in order; write maps/, overlays/ and results.jsonl under ``out``.

    A bad image gets a record with "error" and does not stop the run. results.jsonl is written
    atomically at the end, so an interrupted run never leaves a truncated file. Maps, overlays and
    results.jsonl of an earlier run in ``out`` are removed first.
    """
    ensure_writable(out)
    clear_predict_outputs(out)  # maps of an earlier run would sit beside this run's, unlisted
    records, taken = [], set()
    for p in tqdm(paths, desc="predict", unit="img", disable=not progress, file=sys.stderr):
        try:
            rgb = read_image(p)
        except ImageError as e:
            log.error("%s", e)
            records.append({"path": str(p), "error": str(e)})
            continue
        r = session.inspector.inspect(rgb)
        stem = output_stem(p, taken)
        atomic.write_bytes(out / "maps" / f"{stem}.png", encode_png(map_png16(r.anomaly_map, r.threshold)))
        atomic.write_bytes(out / "overlays" / f"{stem}.png",
                           encode_png(overlay_bgr(r.crop, r.anomaly_map, r.threshold, r.score, r.defective,
                                                  session.warning)))
        rec = {"path": str(p), "image_score": round(r.score, 6), "defective": bool(r.defective),
               "threshold": r.threshold, "map": f"maps/{stem}.png", "overlay": f"overlays/{stem}.png",
               "timings_ms": r.timings_ms, "diagnostics": r.diagnostics}
        if session.warning:
            rec["warning"] = session.warning
        records.append(rec)
    atomic.write_bytes(out / "results.jsonl", "".join(dumps(r) + "\n" for r in records).encode())
    return records
