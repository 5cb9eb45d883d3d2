"""ELPV (the ``elpv-dataset`` PyPI package) laid out as MVTec-style categories, image labels only.

2624 electroluminescence images of solar cells (300x300 grey), each with a defect probability
from expert review (0, 1/3, 2/3, 1) and the cell type (mono / poly). The cut used here:

- good      = probability 0;
- defective = probability >= 0.5 (2/3 and 1: the experts leaned to defective);
- probability 1/3 (the experts leaned to functional but were unsure) is left out, since
  neither label fits it.

Each cell type is one category (``elpv_mono``, ``elpv_poly``): ``train/good`` holds ``n_train``
good cells drawn with ``seed``; ``test/good`` the other good cells; ``test/defective`` the
defective ones. No ``ground_truth`` folder: ELPV has no masks, so pixel metrics are skipped.
Files are copied (the layout stays valid if the package is removed); ``labels.csv`` in each
category records the source file and probability of every image.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from edge_foct.runtime import atomic
from edge_foct.runtime.errors import EdgeFoctError

DEFECT_CUT = 0.5  # probability >= this is defective; 0 is good; anything between is left out


def _labels() -> tuple[Path, list[tuple[str, float, str]]]:
    try:
        import elpv_dataset
    except ImportError:
        raise EdgeFoctError("--elpv needs the elpv-dataset package: pip install elpv-dataset") from None
    csv = Path(elpv_dataset.__file__).parent / "data" / "labels.csv"
    rows = []
    for line in csv.read_text().splitlines():
        if line.strip():
            path, prob, kind = line.split()
            rows.append((path, float(prob), kind))
    return csv.parent, rows


def write_elpv_layout(root: str | Path, n_train: int = 20, seed: int = 0, cut: float = DEFECT_CUT) -> Path:
    """Write (or reuse) the layout under ``root``; returns ``root``, holding one folder per cell type."""
    root = Path(root)
    done = root / "layout.json"
    if done.is_file():
        return root
    src, rows = _labels()
    summary = {"source": str(src), "defect_cut": cut, "n_train": n_train, "seed": seed, "categories": {}}
    for kind in sorted({r[2] for r in rows}):
        cat = root / f"elpv_{kind}"
        good = [r for r in rows if r[2] == kind and r[1] == 0.0]
        bad = [r for r in rows if r[2] == kind and r[1] >= cut]
        train = set(np.random.default_rng(seed).choice(len(good), n_train, replace=False).tolist())
        listing = ["file,source,probability,split"]
        for i, (path, prob, _) in enumerate(good):
            dst = cat / ("train" if i in train else "test") / "good" / Path(path).name
            listing.append(_copy(src / path, dst, cat, prob))
        for path, prob, _ in bad:
            listing.append(_copy(src / path, cat / "test" / "defective" / Path(path).name, cat, prob))
        atomic.write_bytes(cat / "labels.csv", ("\n".join(listing) + "\n").encode())
        summary["categories"][cat.name] = {"train_good": n_train, "test_good": len(good) - n_train,
                                           "test_defective": len(bad),
                                           "left_out_uncertain": sum(r[2] == kind and 0 < r[1] < cut for r in rows)}
    atomic.write_json(done, summary)  # last: a half-written layout is rebuilt, not used
    return root


def _copy(src: Path, dst: Path, cat: Path, prob: float) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    rel = dst.relative_to(cat)
    return f"{rel},{src.name},{prob:.4f},{rel.parts[0]}"


def elpv_root() -> Path:
    """The layout in the user cache (written on first use)."""
    from edge_foct.edge_app.backbones import cache_dir

    return write_elpv_layout(cache_dir() / "datasets" / f"elpv-cut{DEFECT_CUT}")
