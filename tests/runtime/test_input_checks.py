"""Runtime side of issue 16: file modes follow the umask, method parameters and configs are checked
for type and range (one line, EdgeFoctError), and a bank's manifest carries its own sha256."""

from __future__ import annotations

import os
import stat

import pytest

from edge_foct.runtime import atomic
from edge_foct.runtime.bank_check import DIGEST_KEY, manifest_digest
from edge_foct.runtime.config import config_from_dict
from edge_foct.runtime.errors import EdgeFoctError
from edge_foct.runtime.methods import METHODS, make_params


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic.write_bytes(tmp_path / "f.bin", b"x")  # 0600 whatever the umask, before
        with open(tmp_path / "plain.txt", "w") as f:  # what an ordinary open gives, for reference
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode


@pytest.mark.parametrize("name,override,message", [
    ("patchcore", {"coreset_ratio": "abc"}, "coreset_ratio = 'abc'; give a finite number"),
    ("patchcore", {"coreset_ratio": -1}, "coreset_ratio = -1; give a fraction in (0, 1]"),
    ("patchcore", {"coreset_ratio": 1.5}, "give a fraction in (0, 1]"),
    ("patchcore", {"projection_dim": -3}, "projection_dim = -3; give an integer >= 1"),
    ("patchcore", {"projection_dim": 2.5}, "give an integer"),
    ("patchcore+", {"lam": float("nan")}, "lam = nan; give a finite number"),
    ("foct", {"two_fits": 1}, "two_fits = 1; give true or false"),
    ("foct", {"k_fg": -1}, "k_fg = -1; give an integer >= 0"),
    ("foct", {"navigator_init": 3}, "navigator_init = 3; give a string"),
])
def test_method_params_are_checked(name, override, message):
    with pytest.raises(EdgeFoctError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        make_params(name, override)


def test_every_method_and_preset_passes_its_own_checks():
    for name, cls in METHODS.items():
        make_params(name)
        for preset in getattr(cls, "PRESETS", {}):
            make_params(name, preset=preset)


@pytest.mark.parametrize("data,message", [
    ({"input": {"crop": 100, "resize": 100}}, "crop = 100"),
    ({"input": {"crop": "256"}}, "crop = '256' is not an integer"),
    ({"threshold": {"views": 0}}, "views = 0"),
    ({"input": {"aspect": 9}}, "aspect = 9"),
    ({"threshold": {"value": "abc"}}, "value = 'abc'"),
    ({"method": {"params": 3}}, "must be a table"),
])
def test_config_values_are_checked(data, message):
    with pytest.raises(EdgeFoctError, match=message):
        config_from_dict(data, "c.toml")


def test_manifest_digest_covers_every_value_but_itself():
    m = {"threshold": {"value": 1.5}, "grid": [8, 8], "support": [{"path": "a.png"}]}
    d = manifest_digest(m)
    assert manifest_digest({**m, DIGEST_KEY: "anything"}) == d
    assert manifest_digest({**m, "threshold": {"value": 1.5000001}}) != d
    assert manifest_digest({**m, "grid": [8, 9]}) != d
