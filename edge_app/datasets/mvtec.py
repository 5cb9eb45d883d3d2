"""Evaluation data sets. MVTec layout (MVTec AD, MPDD, the shared data), one category folder::

    <category>/train/good/*.png|jpg|bmp
    <category>/test/good/*, <category>/test/<defect>/*
    <category>/ground_truth/<defect>/<stem>_mask.png      (optional)

and VisA in its own layout (``visa.py``), which ``find_categories`` recognises by its split file.
"""

from __future__ import annotations

from pathlib import Path

from edge_foct.edge_app.datasets.categories import Category, TestImage
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.image_io import list_images


def load_category(root: str | Path) -> Category:
    root = Path(root)
    train_dir, test_dir = root / "train" / "good", root / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise EdgeFoctError(f"{root}: not an MVTec-layout category (needs train/good and test/)")
    test = []
    for d in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        for img in list_images(d):
            mask = None
            if d.name != "good":
                cand = [root / "ground_truth" / d.name / f"{img.stem}{s}" for s in ("_mask.png", ".png")]
                mask = next((c for c in cand if c.is_file()), None)
            test.append(TestImage(img, d.name != "good", d.name, mask))
    if not test:
        raise EdgeFoctError(f"{test_dir}: no test images")
    return Category(root.name, root, tuple(list_images(train_dir)), tuple(test))


def find_categories(data_root: str | Path, names: list[str] | None = None) -> list[Category]:
    """Every category folder under ``data_root`` (or the ``names`` given), sorted by name; a VisA root
    or object folder is read in its own layout."""
    data_root = Path(data_root)
    if (data_root / "train").is_dir():
        return [load_category(data_root)]
    from edge_foct.edge_app.datasets.visa import load_visa, visa_root

    if visa_root(data_root) is not None:
        return load_visa(data_root, names)
    dirs = sorted(p for p in data_root.iterdir() if p.is_dir() and (p / "train").is_dir())
    if names:
        missing = sorted(set(names) - {p.name for p in dirs})
        if missing:
            raise EdgeFoctError(f"{data_root}: no categories {missing}; found {[p.name for p in dirs]}")
        dirs = [p for p in dirs if p.name in names]
    if not dirs:
        raise EdgeFoctError(f"{data_root}: no MVTec-layout category folders found")
    return [load_category(p) for p in dirs]
