"""fit / predict / prepare-backbone / build-engines / demo against what a demanding user tried (issue 16):
huge images, files that are no ONNX, read-only outputs, edited banks and configs, reused output
folders, and the help a new user reads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_foct.runtime.image_io import list_images

from ..conftest import ROOT
from .test_cli import one_error_line, run

#: the CLI in a child process, printing its peak resident memory: VmHWM of its own address space
#: (ru_maxrss would carry the forking pytest process's peak across exec)
RSS = """
import sys
from edge_foct.edge_app.cli import main
try:
    main(sys.argv[1:])
finally:
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(f"maxrss_mb {int(hwm.split()[1]) / 1024:.0f}", file=sys.stderr)
"""


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, demo_category, random_backbone) -> Path:
    out = tmp_path_factory.mktemp("fit-h") / "bank"
    res = run("fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(random_backbone),
              "--out", str(out), "--shots", "2", "--size", "64")
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    """16000 x 16000 zeros: ~270 KB on disk, 768 MB as RGB once decoded."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    ok, buf = cv2.imencode(".png", np.zeros((16000, 16000), np.uint8))
    path.write_bytes(buf.tobytes())
    return path


# --- item 2: a pixel budget, checked before decoding ---------------------------------------------

def test_huge_image_in_predict_is_refused_before_decoding(fitted, huge_png, tmp_path):
    if not Path("/proc/self/status").exists():
        pytest.skip("no /proc/self/status (not Linux): the peak memory is read from it")
    res = subprocess.run([sys.executable, "-c", RSS, "predict", "--bank", str(fitted), str(huge_png), "--out",
                          str(tmp_path / "p")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    rec = json.loads((tmp_path / "p" / "results.jsonl").read_text())
    assert "huge.png: image is 256 M pixels, over the 40 M-pixel budget" in rec["error"]
    rss = int(res.stderr.rsplit("maxrss_mb ", 1)[1].split()[0])
    assert rss < 600, res.stderr  # decoded, this one image alone is 768 MB (1.7 GB peak measured before)


def test_huge_support_image_is_one_line_in_fit(huge_png, demo_category, random_backbone, tmp_path):
    sup = tmp_path / "sup"
    shutil.copytree(demo_category / "train" / "good", sup)
    shutil.copy(huge_png, sup / "zz_huge.png")
    res = run("fit", "--support", str(sup), "--backbone", str(random_backbone), "--out", str(tmp_path / "b"))
    one_error_line(res, "zz_huge.png: image is 256 M pixels, over the 40 M-pixel budget")
    assert not (tmp_path / "b").exists()


def test_pixel_budget_from_the_environment(tmp_path, monkeypatch):
    from edge_foct.runtime.errors import ImageError
    from edge_foct.runtime.image_io import read_image

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((100, 200, 3), np.uint8))
    assert read_image(path).shape == (100, 200, 3)
    monkeypatch.setenv("EDGE_FOCT_MAX_PIXELS", "19999")
    with pytest.raises(ImageError, match=r"200x100 .* over the 0 M-pixel budget"):
        read_image(path)
    monkeypatch.setenv("EDGE_FOCT_MAX_PIXELS", "lots")
    with pytest.raises(ImageError, match="EDGE_FOCT_MAX_PIXELS"):
        read_image(path)


# --- item 6 (fit side): option values -----------------------------------------------------------

@pytest.mark.parametrize("args,named", [(("--size", "100"), "--size"), (("--size", "0"), "--size"),
                                        (("--size", "8"), "--size"), (("--shots", "0"), "--shots")])
def test_fit_option_values_are_one_line(demo_category, tmp_path, args, named):
    res = run("fit", "--support", str(demo_category / "train" / "good"), "--out", str(tmp_path / "b"), *args)
    assert res.returncode == 2
    one_error_line(res, named)
    assert not (tmp_path / "b").exists()


# --- item 9: tracebacks that became one line ---------------------------------------------------

@pytest.mark.parametrize("content", [b"this is a text file, not ONNX\n", "truncated"])
def test_backbone_that_is_no_onnx_is_one_line(demo_category, random_backbone, tmp_path, content):
    bad = tmp_path / "bb.onnx"
    bad.write_bytes(random_backbone.read_bytes()[:20000] if content == "truncated" else content)
    res = run("fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(bad),
              "--out", str(tmp_path / "b"), "--shots", "2")
    one_error_line(res, "not an ONNX file")


def test_build_engines_on_a_folder_with_a_corrupt_onnx(tmp_path):
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "broken.onnx").write_bytes(b"\x08\x07garbage")
    res = run("build-engines", "--onnx-dir", str(tmp_path / "onnx"))
    one_error_line(res, "broken.onnx: not an ONNX file")


def unwritable_folder() -> Path:
    """A folder no one may create files in, root included (sysfs); skip where there is none."""
    try:
        fd, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        return Path("/sys/edge-foct-out")
    Path(probe).unlink()
    pytest.skip("/sys is writable here: no unwritable folder to test with")


def test_unwritable_out_fails_before_the_fit(demo_category, random_backbone):
    res = run("fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(random_backbone),
              "--out", str(unwritable_folder() / "bank"), "--shots", "2")
    one_error_line(res, "cannot write there")
    assert "backbone" not in res.stderr  # nothing was computed first


def test_unwritable_out_in_predict_and_serve(fitted, demo_category):
    out = unwritable_folder() / "p"
    one_error_line(run("predict", "--bank", str(fitted), str(demo_category / "test" / "good"), "--out", str(out)),
                   "cannot write there")
    one_error_line(run("serve", "--bank", str(fitted), "--video", "x.avi", "--no-dashboard", "--out", str(out)),
                   "cannot write there")


def test_config_values_are_checked(demo_category, random_backbone, tmp_path):
    for text, named in (('[method.params]\ncoreset_ratio = "abc"\n', "coreset_ratio = 'abc'"),
                        ("[method.params]\ncoreset_ratio = -1\n", "coreset_ratio = -1"),
                        ("[method.params]\nprojection_dim = -3\n", "projection_dim = -3"),
                        ("[input]\ncrop = 100\nresize = 100\n", "crop = 100"),
                        ('[threshold]\nvalue = "abc"\n', "value = 'abc'")):
        cfg = tmp_path / "c.toml"
        cfg.write_text(text)
        res = run("fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(random_backbone),
                  "--out", str(tmp_path / "b"), "--config", str(cfg), "--shots", "2")
        one_error_line(res, named)
        assert not (tmp_path / "b").exists()


# --- item 10: a bank's manifest is hashed and its values checked --------------------------------

def edited(bank: Path, tmp_path: Path, edit, rehash: bool) -> Path:
    """A copy of ``bank`` with ``edit(manifest)`` applied; ``rehash``: as if written by an older fit
    (no manifest hash), so only the value checks stand between the edit and the runtime."""
    d = tmp_path / "edited"
    shutil.copytree(bank, d)
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    if rehash:
        m.pop("manifest_sha256")
    (d / "manifest.json").write_text(json.dumps(m))
    return d


EDITS = {
    "threshold": (lambda m: m["threshold"].update(value=1e9), None),
    "threshold-abc": (lambda m: m["threshold"].update(value="abc"), "threshold value 'abc'"),
    "grid": (lambda m: m.update(grid=[4, 4]), "grid [4, 4] does not match the input (crop 64"),
    "aspect": (lambda m: m["input"].update(aspect=9.0), "input aspect 9.0"),
    "input": (lambda m: m["input"].update(resize=100, crop=100), "crop = 100"),
    "projection_dim": (lambda m: m["method"]["params"].update(projection_dim=-3), "projection_dim = -3"),
    "coreset_ratio": (lambda m: m["method"]["params"].update(coreset_ratio=-1), "coreset_ratio = -1"),
}


@pytest.mark.parametrize("what", sorted(EDITS))
def test_edited_manifest_is_refused(fitted, demo_category, tmp_path, what):
    edit, value_error = EDITS[what]
    res = run("predict", "--bank", str(edited(fitted, tmp_path, edit, rehash=False)),
              str(demo_category / "test" / "good"), "--out", str(tmp_path / "p"))
    one_error_line(res, "edited after fit (its sha256 does not match")
    if value_error is not None:  # an unhashed (older) bank: the value itself is refused
        shutil.rmtree(tmp_path / "edited")
        res = run("predict", "--bank", str(edited(fitted, tmp_path, edit, rehash=True)),
                  str(demo_category / "test" / "good"), "--out", str(tmp_path / "p"))
        one_error_line(res, value_error)


def test_unedited_older_bank_is_used_with_a_warning(fitted, demo_category, tmp_path):
    res = run("predict", "--bank", str(edited(fitted, tmp_path, lambda m: None, rehash=True)),
              str(demo_category / "test" / "good"), "--out", str(tmp_path / "p"))
    assert res.returncode == 0, res.stderr
    assert "written before manifests were hashed" in res.stderr


# --- item 12: small ones -----------------------------------------------------------------------

def test_fit_refuses_to_overwrite_a_bank_without_force(fitted, demo_category, random_backbone, tmp_path):
    bank = tmp_path / "bank"
    shutil.copytree(fitted, bank)
    before = {p.name: p.read_bytes() for p in bank.iterdir()}
    args = ("fit", "--support", str(demo_category / "train" / "good"), "--backbone", str(random_backbone),
            "--out", str(bank), "--shots", "3", "--size", "64")
    one_error_line(run(*args), "already holds a bank")
    assert {p.name: p.read_bytes() for p in bank.iterdir()} == before
    res = run(*args, "--force")
    assert res.returncode == 0, res.stderr
    assert json.loads((bank / "manifest.json").read_text())["shots"] == 3


def test_predict_into_a_reused_out_leaves_no_stale_maps(fitted, demo_category, tmp_path):
    out = tmp_path / "p"
    assert run("predict", "--bank", str(fitted), str(demo_category / "test" / "defect"), "--out", str(out)).returncode == 0
    assert len(list((out / "maps").iterdir())) == 4
    good = list_images(demo_category / "test" / "good")[:2]
    assert run("predict", "--bank", str(fitted), *map(str, good), "--out", str(out)).returncode == 0
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(p.name for p in (out / "maps").iterdir()) == sorted(Path(r["map"]).name for r in recs)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(Path(r["overlay"]).name for r in recs)


def test_prepare_backbone_on_a_prepared_graph(random_backbone, tmp_path):
    res = run("prepare-backbone", str(random_backbone), "--out", str(tmp_path / "bb.onnx"))
    assert res.returncode == 0, res.stderr
    assert "already an edge-foct feature graph" in res.stdout and "unknown model" not in res.stderr
    assert (tmp_path / "bb.onnx").read_bytes() == random_backbone.read_bytes()


def test_default_outputs_are_git_ignored():
    """The README's first command writes edge-foct-demo/ in the working directory: a clone's
    `git status` stays clean (serve's default --out likewise)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout (or no git): nothing to check the ignore rules with")
    from edge_foct.edge_app.commands import demo as demo_cmd, serve as serve_cmd

    for cmd in (demo_cmd.command, serve_cmd.command):
        default = next(p.default for p in cmd.params if p.name == "out")
        probe = f"{default}/results.jsonl"
        r = subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT, capture_output=True)
        assert r.returncode == 0, f"{probe} is not git-ignored"


# --- item 14: help ------------------------------------------------------------------------------

def test_help_lists_methods_presets_and_documents_every_option():
    from edge_foct.edge_app.commands.options import METHOD_LINES
    from edge_foct.runtime.methods import METHODS

    assert set(METHOD_LINES) == set(METHODS)  # a new method gets its line
    for cmd in ("fit", "demo"):
        out = run(cmd, "--help").stdout
        for name, line in METHOD_LINES.items():
            assert any(row.split() and row.split()[0] == name and line in row for row in out.splitlines()), (cmd, name)
        assert "ct, foct, oct: edge | paper" in out and "Presets (--preset):" in out
    fit = run("fit", "--help").stdout
    assert "faster than linearly" in " ".join(fit.split())
    import click

    from edge_foct.edge_app.cli import cli

    for name, cmd in cli.commands.items():
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                assert p.help, f"{name} {p.opts[0]} has no help text"
