"""`fit --segmenter DIR` and `eval --segmenter DIR`: SAM's exported graphs give foct its foreground
masks (a tiny random-weight SAM here: the path, not the masks' quality, is under test)."""

from __future__ import annotations

import json
import logging

import pytest

from edge_foct.edge_app.cli import main
from edge_foct.runtime.foreground import SAM_DECODER_FILE, SAM_ENCODER_FILE

pytest.importorskip("torch", reason="needs torch (the export extra: pip install -e \".[export]\")")
pytest.importorskip("segment_anything", reason="needs segment-anything (the export extra)")


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    from edge_foct.export.segmenter import export_segmenter, tiny_sam

    out = tmp_path_factory.mktemp("sam")
    export_segmenter(tiny_sam(img_size=64), out, "tiny", prompt="box")
    assert (out / SAM_ENCODER_FILE).is_file() and (out / SAM_DECODER_FILE).is_file()
    return out


def test_fit_takes_sam_masks_from_the_segmenter_folder(segmenter, demo_category, random_backbone, tmp_path, caplog):
    out = tmp_path / "bank"
    with caplog.at_level(logging.INFO):
        main(["fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(random_backbone),
              "--out", str(out), "--method", "foct", "--preset", "edge", "--size", "64", "--shots", "2",
              "--engine", "cpu", "--segmenter", str(segmenter)])
    manifest = (out / "manifest.json").read_text()
    assert "sam-box" in manifest  # each support image's mask rule: SAM's, with its prompt
    assert "contrast" not in json.dumps(json.loads(manifest).get("foreground", {}))
    assert any("foreground: SAM engines in" in r.getMessage() for r in caplog.records)


def test_eval_records_the_segmenter(segmenter, demo_category, random_backbone, tmp_path):
    out = tmp_path / "eval"
    main(["eval", "--data", str(demo_category.parent), "--methods", "foct/edge", "--shots", "2", "--splits", "1",
          "--backbone", str(random_backbone), "--size", "64", "--views", "2", "--jobs", "1",
          "--segmenter", str(segmenter), "--out", str(out)])
    rec = json.loads((out / "results.json").read_text())["records"][0]
    assert rec["foreground"]["source"] == f"SAM engines in {segmenter} (sam-box)"
    assert rec["foreground"]["rules"] and all(r.startswith("sam-box") for r in rec["foreground"]["rules"])


def test_a_folder_without_sam_graphs_is_one_line(demo_category, random_backbone, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(random_backbone),
              "--out", str(tmp_path / "bank"), "--method", "foct", "--segmenter", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no {SAM_ENCODER_FILE} / {SAM_DECODER_FILE} there" in err[0]
    assert "edge-foct export --what segmenter" in err[0] and not (tmp_path / "bank").exists()
