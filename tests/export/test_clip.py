"""WinCLIP's CLIP graph (tiny random ViT, the same code path as ViT-B/16+): ONNX Runtime vs torch,
the window embeddings against a direct per-window loop, the image embedding against open_clip's
own encoder, the text side data, its pairing with the graph, and the TensorRT build plan."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the export side needs torch (pip install -e '.[export]')")
open_clip = pytest.importorskip("open_clip", reason="WinCLIP's export needs open_clip_torch (the export extra)")

from edge_foct.edge_app.exporting import export_clip_graph  # noqa: E402
from edge_foct.export import tensorrt_build as tb  # noqa: E402
from edge_foct.export.clip_text import ANOMALOUS_STATES, NORMAL_STATES, TEMPLATES, encode_text, prompts  # noqa: E402
from edge_foct.export.clip_vit import CLIP_MEAN, CLIP_STD, WinClipFeatures, build_clip  # noqa: E402
from edge_foct.export.manifest import ExportError  # noqa: E402
from edge_foct.runtime import names  # noqa: E402
from edge_foct.runtime.backbone import Backbone  # noqa: E402
from edge_foct.runtime.clip_layout import ClipLayout  # noqa: E402
from edge_foct.runtime.errors import BackboneError  # noqa: E402

G, P, E = 4, 32, 16  # the tiny ViT: 64 px, 16 px patches, width 32, embedding 16


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    path = export_clip_graph(out, "tiny", None, False, "metal plate", 17)
    model, _, _ = build_clip(tiny=True)  # seeded: the same weights as the exported graph
    return out, path, model


@pytest.fixture(scope="module")
def image_and_features(exported):
    _, path, _ = exported
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    return x, Backbone.load(path).features(x)  # (2, G, G, D)


def test_graph_follows_the_contract_and_its_parity_is_recorded(exported):
    out, path, _ = exported
    bb = Backbone.load(path)
    assert bb.info.feature_dim == P + 3 * E and bb.info.feature_stride == 16 and bb.fixed_size == 64
    assert not bb.info.pretrained and bb.info.side_data == "clip_tiny.text.npz"
    rec = json.loads((out / "manifest.json").read_text())["graphs"]["clip"]
    assert rec["parity"][0]["ok"] and rec["parity"][0]["shape"] == [2, G, G, P + 3 * E]
    assert rec["parity"][0]["max_abs_err"] < 1e-4
    assert set(rec["sha256"]) == {"clip_tiny.onnx", "clip_tiny.text.npz"}
    assert rec["config"]["window_sizes"] == [2, 3] and rec["config"]["prompts"]["object_name"] == "metal plate"


def _clip_input(x: np.ndarray) -> torch.Tensor:
    """ImageNet-normalised -> CLIP-normalised, computed the long way."""
    col = lambda v: np.array(v, np.float32)[:, None, None]  # noqa: E731
    rgb = x * col(names.IMAGENET_STD) + col(names.IMAGENET_MEAN)
    return torch.from_numpy((rgb - col(CLIP_MEAN)) / col(CLIP_STD))


def test_image_embedding_and_patch_tokens_are_open_clips_own(exported, image_and_features):
    _, _, model = exported
    x, f = image_and_features
    visual = model.visual
    visual.output_tokens = True
    with torch.no_grad():
        pooled, tokens = visual(_clip_input(x))  # open_clip's forward: (2, E), (2, G*G, P)
    visual.output_tokens = False
    np.testing.assert_allclose(f[..., :P].reshape(2, G * G, P), tokens.numpy(), rtol=1e-3, atol=1e-4)
    for r in range(G):
        for c in range(G):
            np.testing.assert_allclose(f[:, r, c, P:P + E], pooled.numpy(), rtol=1e-3, atol=1e-4)


def test_window_embeddings_equal_a_direct_per_window_loop(exported, image_and_features):
    _, _, model = exported
    x, f = image_and_features
    v = model.visual
    with torch.no_grad():
        t = v._embeds(_clip_input(x))  # (2, 1 + G*G, P): tokens with their positions, after ln_pre
        for i, k in enumerate((2, 3)):
            off, m = P + E * (1 + i), G - k + 1
            for r in range(G):
                for c in range(G):
                    got = f[:, r, c, off:off + E]
                    if r >= m or c >= m:  # no k x k window starts here
                        assert (got == 0).all()
                        continue
                    keep = [0] + [1 + (r + a) * G + c + b for a in range(k) for b in range(k)]
                    y = v.ln_post(v.transformer(t[:, keep]))[:, 0] @ v.proj  # the window alone
                    np.testing.assert_allclose(got, y.numpy(), rtol=1e-3, atol=1e-4)


def test_text_side_data_is_the_prompt_ensemble(exported):
    out, path, model = exported
    side = Backbone.load(path).side_arrays()
    assert names.CLIP_GRAPH_SHA256 not in side  # checked and removed by side_arrays
    normal, anomalous = side[names.CLIP_TEXT_NORMAL], side[names.CLIP_TEXT_ANOMALOUS]
    assert normal.shape == (len(NORMAL_STATES) * len(TEMPLATES), E) == (147, E)
    assert anomalous.shape == (len(ANOMALOUS_STATES) * len(TEMPLATES), E) == (84, E)
    np.testing.assert_allclose(np.linalg.norm(normal, axis=1), 1.0, rtol=1e-5)
    p = prompts("metal plate", ANOMALOUS_STATES)
    assert p[0] == "a cropped photo of the damaged metal plate." and len(set(p)) == 84
    np.testing.assert_allclose(anomalous[[0, 83]], encode_text(model, [p[0], p[83]]), rtol=1e-4, atol=1e-5)
    layout = ClipLayout.from_arrays(side)
    assert (layout.grid, layout.patch_dim, layout.embed_dim, layout.window_sizes) == (G, P, E, (2, 3))


def test_side_data_of_another_graph_is_refused(exported, tmp_path):
    out, path, _ = exported
    shutil.copy(path, tmp_path / path.name)
    with np.load(out / "clip_tiny.text.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays[names.CLIP_GRAPH_SHA256] = np.array("0" * 64)
    np.savez(tmp_path / "clip_tiny.text.npz", **arrays)
    with pytest.raises(BackboneError, match="side data of another graph"):
        Backbone.load(tmp_path / path.name).side_arrays()
    (tmp_path / "clip_tiny.text.npz").unlink()
    with pytest.raises(BackboneError, match="missing or unreadable"):
        Backbone.load(tmp_path / path.name).side_arrays()


def test_weights_are_required_unless_random(tmp_path):
    with pytest.raises(ExportError, match="--random-weights"):
        build_clip("ViT-B-16-plus-240", None, False)
    with pytest.raises(ExportError, match="exclude each other"):
        build_clip("ViT-B-16-plus-240", "laion400m_e31", True)


def test_window_module_builds_for_the_real_architecture_without_weights():
    """ViT-B/16+ at 240 px: a 15 x 15 grid, 196 + 169 windows (shapes only, no export)."""
    model = open_clip.model.CLIP(**{"embed_dim": 640, "vision_cfg": {"image_size": 240, "layers": 1, "width": 64,
                                                                     "head_width": 32, "patch_size": 16},
                                    "text_cfg": {"layers": 1, "width": 32, "heads": 2}})
    m = WinClipFeatures(model.visual).eval()
    assert m.grid == 15 and m.tokens2.shape == (196, 5) and m.tokens3.shape == (169, 10)
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 240, 240)).shape == (1, 15, 15, 64 + 3 * 640)


def test_tensorrt_plan_for_the_fixed_size_graph(exported, tmp_path):
    out, path, _ = exported
    d = tmp_path / "onnx"
    d.mkdir()
    shutil.copy(path, d / path.name)
    opts = tb.BuildOptions(fp16=True, int8=True, calib=(tmp_path,), sizes=(256, 336), max_batch=2)
    plan = tb.plan_engines(d, tmp_path / "trt", opts)[0]
    assert plan.profile == {names.BACKBONE_INPUT: ((1, 3, 64, 64), (1, 3, 64, 64), (2, 3, 64, 64))}
    assert plan.int8 and plan.calib_size == 64  # calibration images at the graph's own size, not 336
    assert "--maxShapes=image:2x3x64x64" in plan.trtexec(tmp_path / "t.cache")
