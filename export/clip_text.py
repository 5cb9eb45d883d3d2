"""WinCLIP's compositional prompt ensemble, encoded once at export: the text side of WinCLIP.

Prompts = state words x templates (WinCLIP, Jeong et al. 2023, as in anomalib's prompt_ensemble):
7 normal states ("flawless {}", ...) and 4 anomalous states ("{} with defect", ...), each in 21
templates ("a photo of the {} for visual inspection.", ...), with the object's name. The CLIP text
encoder turns them into two sets of unit embeddings, (147, E) normal and (84, E) anomalous, stored
in the graph's side data (.npz beside it, runtime/names.py keys) with the layout the runtime needs.
No text encoder runs at inspection time; a new object name is a new export of this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_foct.runtime import atomic, names
from edge_foct.runtime.backbone import file_sha256

from .clip_vit import WinClipFeatures

NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect",
                 "{} without damage")
ANOMALOUS_STATES = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = (
    "a cropped photo of the {}.", "a close-up photo of a {}.", "a close-up photo of the {}.",
    "a bright photo of a {}.", "a bright photo of the {}.", "a dark photo of the {}.", "a dark photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.",
    "a blurry photo of a {}.", "a photo of a {}.", "a photo of the {}.", "a photo of a small {}.",
    "a photo of the small {}.", "a photo of a large {}.", "a photo of the large {}.",
    "a photo of the {} for visual inspection.", "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.", "a photo of a {} for anomaly detection.",
)


def prompts(object_name: str, states: tuple[str, ...]) -> list[str]:
    """Every template filled with every state of ``object_name``: len(states) * 21 sentences."""
    return [t.format(s.format(object_name)) for s in states for t in TEMPLATES]


def encode_text(model: torch.nn.Module, sentences: list[str], batch: int = 64) -> np.ndarray:
    """sentences -> (n, E) float32 unit rows from the CLIP model's text encoder."""
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-16-plus-240")  # CLIP's BPE; the same for every open_clip CLIP
    rows = []
    with torch.no_grad():
        for s in range(0, len(sentences), batch):
            rows.append(model.encode_text(tokenizer(sentences[s:s + batch]), normalize=True).float().numpy())
    return np.concatenate(rows)


def text_side_data(model: torch.nn.Module, module: WinClipFeatures, object_name: str) -> dict[str, np.ndarray]:
    """The arrays WinCLIP needs beside its graph (runtime/names.py CLIP_* keys), graph sha256 excepted."""
    return {
        names.CLIP_TEXT_NORMAL: encode_text(model, prompts(object_name, NORMAL_STATES)),
        names.CLIP_TEXT_ANOMALOUS: encode_text(model, prompts(object_name, ANOMALOUS_STATES)),
        names.CLIP_LAYOUT: np.array([module.grid, module.patch_dim, module.embed_dim], np.int64),
        names.CLIP_WINDOWS: np.array(module.window_sizes, np.int64),
    }


def write_side_data(dst: str | Path, arrays: dict[str, np.ndarray], graph: Path) -> Path:
    """Write ``arrays`` + the sha256 of ``graph`` (the pair is checked at load) as .npz, atomically."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays, **{names.CLIP_GRAPH_SHA256: np.array(file_sha256(graph))})
    atomic.write_bytes(Path(dst), buf.getvalue())
    return Path(dst)


def describe(object_name: str) -> dict[str, Any]:
    """The prompt ensemble's record for the export manifest."""
    return {"object_name": object_name, "normal_states": list(NORMAL_STATES),
            "anomalous_states": list(ANOMALOUS_STATES), "templates": len(TEMPLATES),
            "normal_prompts": len(NORMAL_STATES) * len(TEMPLATES),
            "anomalous_prompts": len(ANOMALOUS_STATES) * len(TEMPLATES)}
