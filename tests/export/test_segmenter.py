"""SAM encoder + fixed-prompt decoder graphs, on a tiny random-weight SAM (64 px, dim 32): checker,
ONNX Runtime vs torch, and the decoder equal to segment-anything's own Sam.forward for the same prompt."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="needs torch (the export extra: pip install -e \".[export]\")")

pytest.importorskip("segment_anything")

from edge_foct.export.manifest import ExportError, check_parity  # noqa: E402
from edge_foct.export.segmenter import SamForegroundDecoder, export_segmenter, load_sam, tiny_sam  # noqa: E402
from edge_foct.runtime import names  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
SIZE = 64


@pytest.fixture(scope="module")
def sam():
    return tiny_sam(img_size=SIZE)


@pytest.fixture(scope="module", params=["box", "centre"])
def exported(request, sam, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"sam-{request.param}")
    return request.param, export_segmenter(sam, out, "tiny", prompt=request.param)


def _sam_reference(sam, image: np.ndarray, prompt: str) -> torch.Tensor:
    """segment-anything's own pipeline: (1, 1, S, S) probability of the mask with the best predicted IoU."""
    s = SIZE
    item = {"image": torch.from_numpy(image), "original_size": (s, s)}
    if prompt == "box":
        item["boxes"] = torch.tensor([[0.0, 0.0, s - 1.0, s - 1.0]])
    else:
        item["point_coords"], item["point_labels"] = torch.tensor([[[s / 2, s / 2]]]), torch.tensor([[1]])
    with torch.no_grad():
        (out,) = sam([item], multimask_output=True)
        logits = sam.postprocess_masks(out["low_res_logits"], (s, s), (s, s))  # (1, 3, S, S)
    best = int(out["iou_predictions"][0].argmax())
    return torch.sigmoid(logits[:, best:best + 1])


def test_graphs_pass_the_checker_and_carry_their_contract(exported):
    prompt, (_, enc_path, _, dec_path) = exported
    enc, dec = onnx.load(str(enc_path)), onnx.load(str(dec_path))
    for model in (enc, dec):
        onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in enc.graph.input] == [names.SEGMENTER_INPUT]
    assert [o.name for o in enc.graph.output] == [names.SEGMENTER_EMBEDDINGS] == [i.name for i in dec.graph.input]
    assert [o.name for o in dec.graph.output] == [names.SEGMENTER_OUTPUT]
    meta = {p.key: p.value for p in dec.metadata_props}
    assert meta[names.META_PREFIX + "prompt"] == prompt and meta[names.META_PREFIX + "image_size"] == str(SIZE)


def test_onnx_runtime_matches_torch(exported, rng):
    _, (encoder, enc_path, decoder, dec_path) = exported
    x = rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    (enc,) = check_parity(encoder, enc_path, {names.SEGMENTER_INPUT: x}, RTOL, ATOL)
    assert enc.shape == (1, 32, SIZE // 16, SIZE // 16) and enc.max_abs_ref > 0.5
    emb = rng.standard_normal(enc.shape).astype(np.float32) * 3.0  # wider than a random encoder gives
    (dec,) = check_parity(decoder, dec_path, {names.SEGMENTER_EMBEDDINGS: emb}, RTOL, ATOL)
    assert dec.shape == (1, 1, SIZE, SIZE)


def test_decoder_equals_segment_anything_pipeline(sam, exported, rng):
    prompt, (encoder, _, decoder, _) = exported
    image = rng.uniform(0, 255, (3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        ours = decoder(encoder(sam.preprocess(torch.from_numpy(image)[None])))
    ref = _sam_reference(sam, image, prompt)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)


def test_best_mask_is_picked_by_predicted_iou(sam):
    dec = SamForegroundDecoder(sam, "box").eval()
    emb = torch.randn(1, 32, SIZE // 16, SIZE // 16)
    with torch.no_grad():
        masks, iou = sam.mask_decoder.predict_masks(emb, dec.image_pe, dec.sparse, dec.dense)
        low = masks[:, 1:][:, int(iou[0, 1:].argmax())][:, None]
        want = torch.sigmoid(torch.nn.functional.interpolate(low, (SIZE, SIZE), mode="bilinear"))
        assert torch.allclose(dec(emb), want)
        # the pick follows the IoU head: forcing another output's IoU highest changes the mask
        head = sam.mask_decoder.iou_prediction_head.layers[-1]
        saved = head.bias.clone()
        other = (int(iou[0, 1:].argmax()) + 1) % 3
        head.bias[1 + other] += 100.0
        low2 = masks[:, 1 + other][:, None]
        want2 = torch.sigmoid(torch.nn.functional.interpolate(low2, (SIZE, SIZE), mode="bilinear"))
        got2 = dec(emb)
        head.bias.copy_(saved)
    assert torch.allclose(got2, want2) and not torch.allclose(got2, want)


def test_checkpoint_errors_name_the_fix(tmp_path):
    with pytest.raises(ExportError, match="file not found.*segment-anything"):
        load_sam("vit_b", tmp_path / "missing.pth")
    with pytest.raises(ExportError, match="choose one of"):
        load_sam("vit_x", tmp_path / "missing.pth")
    with pytest.raises(ExportError, match="choose one of"):
        SamForegroundDecoder(tiny_sam(), prompt="everything")


def test_checkpoint_is_loaded_into_the_registry_model(tmp_path, monkeypatch):
    import segment_anything

    # the released architectures are large: stand the tiny one in for "vit_b"
    monkeypatch.setitem(segment_anything.sam_model_registry, "vit_b", lambda checkpoint=None: tiny_sam(seed=0))
    want = tiny_sam(seed=1)
    torch.save(want.state_dict(), tmp_path / "sam.pth")
    got = load_sam("vit_b", tmp_path / "sam.pth")
    for (k, a), (_, b) in zip(want.state_dict().items(), got.state_dict().items()):
        assert torch.equal(a, b), k
    torch.save({"mask_decoder.iou_token.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ExportError, match="not a SAM vit_b checkpoint"):
        load_sam("vit_b", tmp_path / "bad.pth")
