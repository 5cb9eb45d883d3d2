"""VisA (Zou et al., ECCV 2022) read in its own layout, in place: no conversion, nothing copied.

    <root>/split_csv/1cls.csv                  object,split,label,image,mask  (paths relative to <root>)
    <root>/<object>/Data/Images/Normal/*.JPG
    <root>/<object>/Data/Images/Anomaly/*.JPG
    <root>/<object>/Data/Masks/Anomaly/*.png   label masks: every non-zero pixel is a defect

The data set authors' one-class split (``1cls.csv``) decides what is train (normal images only)
and test. ``--data <root>`` gives every object (or those named by ``--categories``);
``--data <root>/<object>`` gives that one.
"""

from __future__ import annotations

import csv
from pathlib import Path

from edge_foct.edge_app.datasets.categories import Category, TestImage
from edge_foct.runtime.errors import EdgeFoctError

SPLIT_FILE = Path("split_csv") / "1cls.csv"
COLUMNS = ("object", "split", "label", "image", "mask")


def visa_root(path: str | Path) -> Path | None:
    """The VisA root holding ``split_csv/1cls.csv`` for a root or an object folder; None when not VisA."""
    path = Path(path)
    return next((p for p in (path, path.parent) if (p / SPLIT_FILE).is_file()), None)


def _read_split(root: Path) -> list[dict[str, str]]:
    split = root / SPLIT_FILE
    with open(split, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise EdgeFoctError(f"{split}: missing columns {missing}; a VisA split file has {','.join(COLUMNS)}")
        rows = [{k: (r[k] or "").strip() for k in COLUMNS} for r in reader]
    bad = [(i + 2, r["split"], r["label"]) for i, r in enumerate(rows)
           if r["split"] not in ("train", "test") or r["label"] not in ("normal", "anomaly")
           or (r["split"] == "train" and r["label"] != "normal")]
    if bad:
        raise EdgeFoctError(f"{split}: rows {bad[:5]} (line, split, label): split must be train/test, label "
                            "normal/anomaly, and train images normal")
    return rows


def _category(root: Path, name: str, rows: list[dict[str, str]]) -> Category:
    images = {r["image"] for r in rows}
    absent = sorted(p for p in images if not (root / p).is_file())
    if absent:
        raise EdgeFoctError(f"{root / SPLIT_FILE}: {len(absent)} image(s) of {name!r} not found under {root}, "
                            f"e.g. {absent[:3]}")
    train = tuple(sorted(root / r["image"] for r in rows if r["split"] == "train"))
    test = []
    for r in sorted((r for r in rows if r["split"] == "test"), key=lambda r: r["image"]):
        defective = r["label"] == "anomaly"
        mask = root / r["mask"] if defective and r["mask"] and (root / r["mask"]).is_file() else None
        test.append(TestImage(root / r["image"], defective, "anomaly" if defective else "good", mask,
                              mask_nonzero=True))
    if not train or not test:
        raise EdgeFoctError(f"{root / SPLIT_FILE}: {name!r} has {len(train)} train and {len(test)} test images")
    return Category(name, root / name, train, tuple(test))


def load_visa(path: str | Path, names: list[str] | None = None) -> list[Category]:
    """The categories of a VisA root (all, or ``names``), or of one object folder; sorted by name."""
    path = Path(path)
    root = visa_root(path)
    if root is None:
        raise EdgeFoctError(f"{path}: no {SPLIT_FILE} here or one folder up: not a VisA layout")
    if path.resolve() != root.resolve():  # an object folder
        names = [path.name]
    rows = _read_split(root)
    objects = sorted({r["object"] for r in rows})
    if names:
        missing = sorted(set(names) - set(objects))
        if missing:
            raise EdgeFoctError(f"{root / SPLIT_FILE}: no objects {missing}; found {objects}")
        objects = [o for o in objects if o in names]
    return [_category(root, o, [r for r in rows if r["object"] == o]) for o in objects]
