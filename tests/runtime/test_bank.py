"""Bank round trip; refusal of other versions, corrupt files and other backbones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_foct.runtime.backbone import Backbone
from edge_foct.runtime.bank import Bank
from edge_foct.runtime.config import Config
from edge_foct.runtime.errors import BankError
from edge_foct.runtime.fit import fit_bank


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory, random_backbone):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    cfg = Config().replace(input={"resize": 64, "crop": 64}, threshold={"views": 2})
    bank = fit_bank(Backbone.load(random_backbone), images, cfg)
    return bank.save(tmp_path_factory.mktemp("bank") / "b")


def test_round_trip(bank_dir):
    bank = Bank.load(bank_dir)
    m = bank.make_method()
    q = np.random.default_rng(1).standard_normal((64, m.memory.shape[1])).astype(np.float32)
    again = Bank.load(bank_dir).make_method()
    np.testing.assert_array_equal(m.score(q).scores, again.score(q).scores)
    from edge_foct.runtime.threshold import RULE_NO_CALIBRATION

    t = bank.manifest["threshold"]
    assert t["rule"] == RULE_NO_CALIBRATION[0] and t["base"] is not None  # from the loo-patch-q-capped value
    assert "add 10-20 good images with --calibrate" in t["warning"]  # 2 images, no calibration
    assert len(bank.manifest["threshold"]["samples"]) == 4
    assert bank.manifest["backbone"]["pretrained"] is False


def test_other_format_version_refused(bank_dir, tmp_path):
    import shutil

    d = tmp_path / "old"
    shutil.copytree(bank_dir, d)
    m = json.loads((d / "manifest.json").read_text())
    m["format_version"] = 0
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BankError, match="format 0.*re-run `edge-foct fit`"):
        Bank.load(d)


def test_corrupt_arrays_refused(bank_dir, tmp_path):
    import shutil

    d = tmp_path / "bad"
    shutil.copytree(bank_dir, d)
    (d / "bank.npz").write_bytes(b"garbage")
    with pytest.raises(BankError, match="do not match the manifest"):
        Bank.load(d)


def test_not_a_bank(tmp_path):
    with pytest.raises(BankError, match="not a bank"):
        Bank.load(tmp_path)


def test_other_backbone_refused(bank_dir, mobilenet_features):
    with pytest.raises(BankError, match="re-run `edge-foct fit --backbone"):
        Bank.load(bank_dir).check_backbone(Backbone.load(mobilenet_features).info)
