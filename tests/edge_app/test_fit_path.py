"""One fit path: `fit --method foct` fits the same method `eval` measures (foreground masks included)."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from edge_foct.edge_app.cli import cli
from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.bank import Bank
from edge_foct.runtime.config import load_config
from edge_foct.runtime.fit import default_foreground, fit_bank, support_masks
from edge_foct.runtime.image_io import list_images, read_image
from edge_foct.runtime.preprocess import Preprocessor


def test_fit_foct_applies_the_foreground(demo_category, random_backbone, tmp_path):
    out = tmp_path / "bank"
    res = CliRunner().invoke(cli, ["fit", "--support", str(demo_category / "train" / "good"), "--shots", "2",
                                   "--backbone", str(random_backbone), "--method", "foct", "--preset", "edge",
                                   "--size", "64", "--out", str(out)])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"]["name"] == "foct"
    assert all("foreground_rule" in s for s in manifest["support"]), manifest["support"]


def test_fit_bank_without_an_estimator_uses_the_default_one(demo_category, random_backbone):
    """fit_bank called with no estimator (fit, demo, serve) == fit_bank given eval's estimator."""
    bb = Backbone.load(random_backbone)
    images = [read_image(p) for p in list_images([str(demo_category / "train" / "good")])[:2]]
    config = load_config(None).replace(method={"name": "foct", "preset": "edge"}, input={"resize": 64, "crop": 64},
                                       threshold={"value": 1.0})
    a = fit_bank(bb, images, config)
    b = fit_bank(bb, images, config, foreground=default_foreground())
    assert set(a.arrays) == set(b.arrays)
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k])
    masks, rules = support_masks(images, Preprocessor(64, 64), default_foreground())
    assert masks.shape == (2, 64) and len(rules) == 2
    assert isinstance(a, Bank)


def test_keep_aspect_fit_and_predict(random_backbone, tmp_path):
    """fit --keep-aspect on 2.5:1 parts: the bank records the aspect, predict's maps are 2.5:1."""
    import cv2

    rng = np.random.default_rng(0)
    good = tmp_path / "good"
    good.mkdir()
    for i in range(3):
        cv2.imwrite(str(good / f"g{i}.png"), rng.integers(0, 255, (80, 200, 3), dtype=np.uint8))
    bank = tmp_path / "bank"
    runner = CliRunner()
    res = runner.invoke(cli, ["fit", "--support", str(good), "--backbone", str(random_backbone), "--size", "64",
                              "--keep-aspect", "--out", str(bank)])
    assert res.exit_code == 0, res.output
    assert json.loads((bank / "manifest.json").read_text())["input"]["aspect"] == 2.5
    res = runner.invoke(cli, ["predict", "--bank", str(bank), str(good), "--out", str(tmp_path / "pred")])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "pred" / "results.jsonl").read_text().splitlines()[0])
    assert cv2.imread(str(tmp_path / "pred" / rec["map"]), cv2.IMREAD_UNCHANGED).shape == (64, 160)


def test_fit_and_eval_build_the_same_bank(demo_category, random_backbone, tmp_path):
    """`edge-foct fit` on a split's support == eval's bank for that split, array by array (both call
    runtime.fit.fit_bank; eval feeds it from its feature cache). Same engine: eval defaults to ONNX
    Runtime float32, fit to the fastest engine here."""
    from edge_foct.edge_app.datasets.mvtec import find_categories
    from edge_foct.edge_app.evaluation.protocol import FeatureStore, MethodSpec, draw_split, fit_split

    cat = find_categories(demo_category)[0]
    bb = Backbone.load(random_backbone)
    for method, preset, augment in (("patchcore", None, "none"), ("foct", "edge", "none"), ("patchcore+", None, "none"),
                                    ("foct", "edge", "flip")):
        support, _ = draw_split(cat, 2, 1, seed=0)
        out = tmp_path / f"bank-{method}-{augment}"
        args = ["fit", "--support", *[a for p in support for a in ("--support", str(p))][1:], "--backbone",
                str(random_backbone), "--method", method, "--size", "64", "--out", str(out),
                "--engine", "cpu"]  # eval's engine (fit's auto may pick OpenVINO bf16 on this CPU)
        res = CliRunner().invoke(cli, args + ["--augment", augment] + (["--preset", preset] if preset else []))
        assert res.exit_code == 0, res.output
        cli_bank = Bank.load(out)
        eval_bank = fit_split(cat, FeatureStore(bb, Preprocessor(64, 64)), MethodSpec(method, preset, augment=augment), 2, 1,
                               seed=0)
        assert [s["path"] for s in cli_bank.manifest["support"]] == [str(p) for p in support]
        assert eval_bank.manifest["support"] == cli_bank.manifest["support"]  # foreground rules included
        for key in ("method", "threshold", "input", "grid", "backbone", "augment", "foreground"):
            assert eval_bank.manifest.get(key) == cli_bank.manifest.get(key), key  # foreground: foct only
        assert set(eval_bank.arrays) == set(cli_bank.arrays)
        for k in cli_bank.arrays:
            np.testing.assert_array_equal(eval_bank.arrays[k], cli_bank.arrays[k], err_msg=f"{method}: {k}")
