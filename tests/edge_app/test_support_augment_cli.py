"""`fit --augment` / `eval --augment` / `[support] augment`: one augmented memory, whatever the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge_foct.edge_app.cli import cli
from edge_foct.edge_app.datasets.mvtec import load_category
from edge_foct.edge_app.evaluation.protocol import FeatureStore, MethodSpec, draw_split, run_split
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.bank import Bank
from edge_foct.runtime.config import load_config
from edge_foct.runtime.fit import fit_bank
from edge_foct.runtime.image_io import read_image
from edge_foct.runtime.preprocess import Preprocessor

from .test_cli import one_error_line, run


def test_fit_records_the_augmentation_and_predict_reads_the_bank(demo_category, random_backbone, tmp_path):
    out = tmp_path / "bank"
    runner = CliRunner()
    res = runner.invoke(cli, ["fit", "--support", str(demo_category / "train" / "good"), "--shots", "2",
                              "--backbone", str(random_backbone), "--method", "foct", "--preset", "edge",
                              "--size", "64", "--augment", "rot90+flip", "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["support"] == {"augment": "rot90+flip"}
    assert m["augment"]["spec"] == "rot90+flip" and m["augment"]["memory_images"] == 16
    assert m["augment"]["transforms"][0] == "id" and len(m["augment"]["transforms"]) == 8
    assert len(m["support"]) == 2 and all("foreground_rule" in s for s in m["support"])  # masks of the originals
    assert Bank.load(out).arrays["support_fg_fraction"].shape == (16,)  # one mask per memory image
    res = runner.invoke(cli, ["predict", "--bank", str(out), str(demo_category / "test" / "good"),
                              "--out", str(tmp_path / "pred")])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "pred" / "results.jsonl").read_text().splitlines()) == 4


def test_the_toml_key_fits_what_the_option_fits(demo_category, random_backbone, tmp_path):
    (tmp_path / "c.toml").write_text('[support]\naugment = "rot180"\n')
    for name, extra in (("toml", ["--config", str(tmp_path / "c.toml")]), ("cli", ["--augment", "rot180"])):
        res = CliRunner().invoke(cli, ["fit", "--support", str(demo_category / "train" / "good"), "--shots", "2",
                                       "--backbone", str(random_backbone), "--size", "64", "--threshold", "1",
                                       "--out", str(tmp_path / name), *extra])
        assert res.exit_code == 0, res.output
    a, b = Bank.load(tmp_path / "toml"), Bank.load(tmp_path / "cli")
    assert a.manifest["augment"] == b.manifest["augment"] and a.manifest["augment"]["memory_images"] == 4
    np.testing.assert_array_equal(a.arrays["memory"], b.arrays["memory"])


@pytest.mark.parametrize("method,preset", [("patchcore", None), ("foct", "edge")])
def test_fit_and_eval_build_the_same_memory(demo_category, random_backbone, method, preset):
    """fit_bank (fit, demo, serve) and run_split (eval) with rot90+flip: the same learnt threshold,
    and, for patchcore, the same test scores from the same 8x memory."""
    cat = load_category(demo_category)
    bb = Backbone.load(random_backbone)
    spec = MethodSpec(method, preset, augment="rot90+flip")
    r = run_split(cat, FeatureStore(bb, Preprocessor(64, 64)), spec, 2, 0, 0, views=2)
    paths, _ = draw_split(cat, 2, 0, 0)
    config = load_config(None).replace(method={"name": method, "preset": preset}, input={"resize": 64, "crop": 64},
                                       threshold={"views": 2, "seed": 0}, support={"augment": "rot90+flip"})
    bank = fit_bank(bb, [read_image(p) for p in paths], config)
    assert bank.manifest["augment"]["memory_images"] == 16
    assert bank.threshold == pytest.approx(r.threshold, rel=1e-5)
    none = run_split(cat, FeatureStore(bb, Preprocessor(64, 64)), MethodSpec(method, preset), 2, 0, 0, views=2)
    assert none.threshold == pytest.approx(r.threshold, rel=1e-6)  # learnt from the originals alone
    plain = fit_bank(bb, [read_image(p) for p in paths], config.replace(support={"augment": "none"}))
    assert len(bank.arrays["memory"]) > 4 * len(plain.arrays["memory"])  # 8 images per support image
    assert not np.allclose(r.image_scores, none.image_scores)  # the memory changed the scores
    if method == "patchcore":
        pre = Preprocessor(64, 64)
        fitted = bank.make_method()
        store = FeatureStore(bb, pre)
        scores = [float(fitted.score(store[t.path], update=False).scores.max()) for t in cat.test]
        np.testing.assert_allclose(scores, r.image_scores, rtol=1e-5)


def test_eval_compares_specs_on_the_same_features(demo_category, random_backbone, tmp_path):
    res = CliRunner().invoke(cli, ["eval", "--data", str(demo_category), "--backbone", str(random_backbone),
                                   "--size", "64", "--views", "2", "--shots", "2", "--splits", "1",
                                   "--augment", "none,flip", "--augment", "ROT180", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "results.json").read_text())
    assert got["run"]["augment"] == ["none", "flip", "rot180"]
    assert [(r["method"], r["augment"]) for r in got["records"]] == [
        ("patchcore", "none"), ("patchcore@flip", "flip"), ("patchcore@rot180", "rot180")]
    assert "patchcore@flip" in (tmp_path / "results.md").read_text()


def test_a_bad_spec_is_one_error_line(demo_category, random_backbone, tmp_path):
    one_error_line(run("fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(random_backbone),
                       "--augment", "rot45", "--out", str(tmp_path / "bank")), "augment 'rot45': unknown transform")
    assert not (tmp_path / "bank").exists()
    one_error_line(run("eval", "--data", str(demo_category), "--backbone", str(random_backbone),
                       "--augment", "none,spin", "--out", str(tmp_path / "ev")), "augment 'spin'")
    import cv2

    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(2):  # 2.5:1 parts: --keep-aspect makes a non-square input, which a quarter turn does not fit
        cv2.imwrite(str(wide / f"g{i}.png"), np.random.default_rng(i).integers(0, 255, (40, 100, 3), dtype=np.uint8))
    one_error_line(run("fit", "--support", str(wide), "--backbone", str(random_backbone), "--size", "64",
                       "--keep-aspect", "--augment", "rot90", "--out", str(tmp_path / "b2")), "quarter turn")
    assert not (tmp_path / "b2").exists()
