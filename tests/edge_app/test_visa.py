"""VisA in its own layout (split_csv/1cls.csv, Data/Images, label masks), built from the demo part."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_foct.edge_app.datasets.mvtec import find_categories, load_category
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.image_io import list_images, read_mask

from .test_eval import _eval

HEADER = "object,split,label,image,mask"


def visa_tree(mvtec: Path, root: Path, objects=("demo_part", "second")) -> Path:
    """The MVTec-layout demo category rewritten as VisA objects: train -> Normal/t*, test good ->
    Normal/g*, defects -> Anomaly/d* with label masks of value 1 (VisA's masks are label maps)."""
    rows = [HEADER]
    for obj in objects:
        data = root / obj / "Data"
        for d in ("Images/Normal", "Images/Anomaly", "Masks/Anomaly"):
            (data / d).mkdir(parents=True, exist_ok=True)
        for split, src, prefix in (("train", "train/good", "t"), ("test", "test/good", "g")):
            for p in list_images([str(mvtec / src)]):
                rel = f"{obj}/Data/Images/Normal/{prefix}{p.name}"
                shutil.copyfile(p, root / rel)
                rows.append(f"{obj},{split},normal,{rel},")
        for d in sorted(q for q in (mvtec / "test").iterdir() if q.is_dir() and q.name != "good"):
            for p in list_images([str(d)]):
                rel, mrel = f"{obj}/Data/Images/Anomaly/d{p.name}", f"{obj}/Data/Masks/Anomaly/d{p.stem}.png"
                shutil.copyfile(p, root / rel)
                mask = read_mask(mvtec / "ground_truth" / d.name / f"{p.stem}_mask.png")
                cv2.imwrite(str(root / mrel), mask.astype(np.uint8))  # 0 / 1
                rows.append(f"{obj},test,anomaly,{rel},{mrel}")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def visa(demo_category, tmp_path) -> Path:
    return visa_tree(demo_category, tmp_path / "visa")


def test_visa_root_and_object_folder_are_read_in_place(visa, demo_category):
    mv = load_category(demo_category)
    cats = find_categories(visa)
    assert [c.name for c in cats] == ["demo_part", "second"]
    assert [c.name for c in find_categories(visa, ["second"])] == ["second"]
    (one,) = find_categories(visa / "demo_part")
    assert one.name == "demo_part" and one.root == visa / "demo_part"
    assert [p.name for p in one.train] == [f"t{p.name}" for p in mv.train]
    assert [(t.defective, t.defect_type) for t in one.test] == [(t.defective, "anomaly" if t.defective else "good")
                                                                 for t in mv.test]
    assert one.has_masks and all(t.mask_nonzero for t in one.test)
    for t, m in zip(one.test, mv.test):
        if t.defective:
            np.testing.assert_array_equal(read_mask(t.mask, nonzero=True), read_mask(m.mask))
            assert not read_mask(t.mask).any()  # a label mask read as 0/255 would lose every defect


def test_eval_on_visa_equals_eval_on_the_same_images_in_mvtec_layout(visa, demo_category, random_backbone, tmp_path):
    args = ("--methods", "patchcore", "--shots", "1", "--splits", "2", "--seed", "1")
    got, _ = _eval(visa, random_backbone, tmp_path / "visa", "--categories", "demo_part", *args)
    want, _ = _eval(demo_category, random_backbone, tmp_path / "mvtec", *args)
    (g,), (w,) = got["records"], want["records"]
    assert g["category"] == "demo_part" and (g["n_test"], g["n_defective"]) == (w["n_test"], w["n_defective"])
    for k in ("image_auroc", "pixel_auroc", "aupro", "false_alarm_rate", "miss_rate"):
        assert g["metrics"][k]["per_split"] == pytest.approx(w["metrics"][k]["per_split"]), k


def test_bad_visa_split_files_are_clear_errors(visa):
    split = visa / "split_csv" / "1cls.csv"
    text = split.read_text()
    with pytest.raises(EdgeFoctError, match="no objects \\['nope'\\]"):
        find_categories(visa, ["nope"])
    split.write_text(text.replace("object,", "obj,", 1))
    with pytest.raises(EdgeFoctError, match="missing columns \\['object'\\]"):
        find_categories(visa)
    split.write_text(text.replace("demo_part,train,normal", "demo_part,train,anomaly", 1))
    with pytest.raises(EdgeFoctError, match="train images normal"):
        find_categories(visa)
    split.write_text(text)
    next((visa / "second" / "Data" / "Images" / "Normal").iterdir()).unlink()
    with pytest.raises(EdgeFoctError, match="1 image\\(s\\) of 'second' not found"):
        find_categories(visa)
    assert [c.name for c in find_categories(visa, ["demo_part"])] == ["demo_part"]  # the other object still reads
