"""WinCLIP (Jeong et al. 2023) and WinCLIP+ (seed 001, sec. 5.2) on packed CLIP features.

Features come from a CLIP graph (export/clip_vit.py; layout in runtime/clip_layout.py): per image
the patch tokens (Q, P), the image embedding (E,) and, per window size k (2 and 3: WinCLIP's small
and mid scales), the embeddings of the (g - k + 1)^2 windows (nw_k, E). Every vector is compared by
cosine (all rows are unit-normalised first). S = 1 + number of window sizes scales.

- zero-shot (text only, K = 0 works): p(x) = softmax(cos(x, [t_normal, t_anomalous]) / tau)[1],
  tau = 0.07 (WinCLIP's Eq. 1 temperature, CLIP's initial one, as in anomalib's WinCLIP; not the
  trained logit scale), t_* the prompt ensembles from export, each the mean of its unit prompt
  embeddings. Image scale: p(image) at every patch; window scale k: p(window) harmonically
  aggregated to the patches (runtime/windows.py). The zero-shot map is the harmonic mean of the S
  maps (anomalib's WinCLIP).
- few-shot (K >= 1): a visual memory per scale (the support images' patch tokens, and their window
  embeddings per size); a query row's score is min over the memory of (1 - cos) / 2; window scores
  are harmonically aggregated; the few-shot map is the mean of the S maps.
- WinCLIP: map = (zero-shot + few-shot) / 2 (zero-shot alone when K = 0).
- WinCLIP+ (Eq. 8): the memory of each scale is a coreset (alpha) of prototypes M, refined per
  query by the PatchCore+ EM (runtime/methods/patchcore_plus.py ``refine``: the same W0 solve, the
  same Sinkhorn E-step and M-step, imported, not copied), lambda 0.1, on unit rows: for unit vectors
  ||a - b||^2 = 2 (1 - cos), so the refinement's squared-Euclidean reconstruction and transport
  cost are the cosine objective of Eq. 8 up to the factor 4 (and the norm of the refined
  prototypes, which the reconstruction keeps near 1). The score is Eq. 8's exactly:
  s_j = min_r (1 - cos(f_j, r)) / 2 over the refined prototypes r = (W M)_r. Map as WinCLIP's (Eq. 9).

Image score: the pipeline's, max of the map (one threshold rule for every method). WinCLIP reports
(p(image) + max few-shot) / 2 instead; the map's maximum contains p(image) as one of its S scales.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .. import names
from ..clip_layout import ClipFeatures, ClipLayout, class_text, unit_rows
from ..coreset import support_coreset
from ..errors import EdgeFoctError
from ..windows import harmonic_aggregate
from .base import Method, PatchScores, SupportSet
from .patchcore_plus import PatchCorePlusParams, Prototypes, refine


@dataclass(frozen=True)
class WinClipParams:
    temperature: float = 0.07  # tau of the two-class text softmax
    coreset_ratio: float = 1.0  # share of each scale's support rows kept (WinCLIP keeps them all)
    projection_dim: int = 128  # coreset distance after a random projection to this
    seed: int = 0


@dataclass(frozen=True)
class WinClipPlusParams:
    temperature: float = 0.07
    coreset_ratio: float = 0.5  # alpha per scale: 0.5 / 0.3 / 0.2 for MVTec / VisA / MPDD (presets)
    projection_dim: int = 128
    seed: int = 0
    lam: float = 0.1  # seed 001 sec. 6: lambda for WinCLIP+
    em_iters: int = 10
    sinkhorn_iters: int = 5
    eps_rel: float = 0.1
    ridge_rel: float = 1e-3
    step_scale: float = 1.0

    def refine_params(self) -> PatchCorePlusParams:
        """The PatchCore+ parameters its shared ``refine`` reads (validated there)."""
        keep = {f.name for f in fields(PatchCorePlusParams)}
        return PatchCorePlusParams(**{k: v for k, v in self.__dict__.items() if k in keep})


def anomaly_probability(emb: np.ndarray, text: np.ndarray, temperature: float) -> np.ndarray:
    """emb (n, E) unit rows, text (2, E) [normal, anomalous] -> (n,) float64 p(anomalous)."""
    logits = (emb.astype(np.float64) @ text.T.astype(np.float64)) / temperature  # (n, 2)
    return 1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))  # the two-class softmax


def zero_shot_map(c: ClipFeatures, layout: ClipLayout, text: np.ndarray, temperature: float) -> np.ndarray:
    """-> (Q,) harmonic mean over the S scales of the zero-shot maps."""
    q = layout.grid ** 2
    image = float(anomaly_probability(c.image[None], text, temperature)[0])
    maps = [np.full(q, image)] + [harmonic_aggregate(anomaly_probability(w, text, temperature), layout.grid, k)
                                  for w, k in zip(c.windows, layout.window_sizes)]  # S x (Q,)
    with np.errstate(divide="ignore"):
        return (len(maps) / np.sum([1.0 / m for m in maps], axis=0)).astype(np.float32)


def min_cosine_distance(x: np.ndarray, memory: np.ndarray) -> np.ndarray:
    """x (n, c), memory (M, c) unit rows -> (n,) min over memory of (1 - cos) / 2."""
    return np.clip((1.0 - (x @ memory.T).max(axis=1)) * 0.5, 0.0, 1.0)


class WinClip(Method):
    name = "winclip"
    Params = WinClipParams
    zero_shot = True
    needs_context = (names.CLIP_LAYOUT, names.CLIP_WINDOWS, names.CLIP_TEXT_NORMAL, names.CLIP_TEXT_ANOMALOUS)

    def __init__(self, layout: ClipLayout, text: np.ndarray, memories: tuple[np.ndarray, ...], params: Any) -> None:
        self.layout, self.params = layout, params
        self.text = unit_rows(text)  # (2, E)
        self.memories = tuple(np.ascontiguousarray(m, np.float32) for m in memories)  # S x (n_s, dim_s)

    @classmethod
    def fit(cls, support: SupportSet, params: Any) -> "WinClip":
        layout = ClipLayout.from_arrays(support.context)
        per_image = [layout.split(f) for f in support.features]  # K x ClipFeatures
        memories = []
        for s in range(1 + len(layout.window_sizes)):
            rows = [c.patches if s == 0 else c.windows[s - 1] for c in per_image]  # K x (n, dim)
            dim = layout.patch_dim if s == 0 else layout.embed_dim
            x = np.stack(rows) if rows else np.zeros((0, 0, dim), np.float32)  # (K, n, dim)
            memories.append(support_coreset(x, params.coreset_ratio, params.projection_dim, params.seed)
                            if params.coreset_ratio < 1.0 else x.reshape(-1, dim))
        return cls(layout, class_text(support.context), tuple(memories), params)

    def arrays(self) -> dict[str, np.ndarray]:
        return {**self.layout.to_arrays(), "text": self.text, **{f"memory{s}": m for s, m in enumerate(self.memories)}}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: Any) -> "WinClip":
        layout = ClipLayout.from_arrays(arrays)
        memories = tuple(arrays[f"memory{s}"] for s in range(1 + len(layout.window_sizes)))
        return cls(layout, arrays["text"], memories, params)

    def scale_distance(self, s: int, x: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Scale s's query rows x (n, dim) unit -> (n,) few-shot distances, diagnostics."""
        return min_cosine_distance(x, self.memories[s]), {}

    def few_shot_map(self, c: ClipFeatures) -> tuple[np.ndarray, dict[str, Any]]:
        """-> (Q,) mean over the S scales of the few-shot maps, diagnostics of the patch scale."""
        g = self.layout.grid
        patch, diag = self.scale_distance(0, c.patches)  # (Q,)
        maps = [patch] + [harmonic_aggregate(self.scale_distance(s + 1, w)[0], g, k)
                          for s, (w, k) in enumerate(zip(c.windows, self.layout.window_sizes))]
        return np.mean(maps, axis=0).astype(np.float32), diag

    def score(self, features: np.ndarray, *, update: bool = True) -> PatchScores:
        c = self.layout.split(np.asarray(features, np.float32))
        tau = self.params.temperature
        zs = zero_shot_map(c, self.layout, self.text, tau)  # (Q,)
        diag: dict[str, Any] = {"memory_size": int(sum(m.shape[0] for m in self.memories)),
                                "zero_shot_image": float(anomaly_probability(c.image[None], self.text, tau)[0])}
        if self.memories[0].shape[0] == 0:  # K = 0: text prompts only
            return PatchScores(zs, diag)
        fs, extra = self.few_shot_map(c)
        diag.update(extra)
        return PatchScores(0.5 * (zs + fs), diag)


class WinClipPlus(WinClip):
    name = "winclip+"
    Params = WinClipPlusParams
    zero_shot = False
    loo_matched_capacity = ("coreset_ratio",)  # a refined reconstruction depends on the memory size (patchcore+)
    #: seed 001 sec. 6: alpha per data set family; "no-ot": Table 2's "W* without T*"
    PRESETS = {"mvtec": {"coreset_ratio": 0.5}, "visa": {"coreset_ratio": 0.3}, "mpdd": {"coreset_ratio": 0.2},
               "no-ot": {"lam": 0.0}}

    def __init__(self, layout: ClipLayout, text: np.ndarray, memories: tuple[np.ndarray, ...],
                 params: WinClipPlusParams) -> None:
        super().__init__(layout, text, memories, params)
        self._refine = params.refine_params()
        self._protos = tuple(Prototypes.build(m, params.ridge_rel) for m in self.memories)

    @classmethod
    def fit(cls, support: SupportSet, params: WinClipPlusParams) -> "WinClipPlus":
        if support.features.shape[0] == 0:
            raise EdgeFoctError("winclip+ refines prototypes of support images: give at least 1 "
                                "(--shots 1); for text prompts only use --method winclip with --shots 0")
        return super().fit(support, params)  # type: ignore[return-value]

    def scale_distance(self, s: int, x: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Eq. 8: refine scale s's prototypes for the query x (m, c) unit, then (1 - cos) / 2 to the nearest."""
        r = refine(x, self._protos[s], self._refine)  # PatchCore+'s refinement of this scale's prototypes
        W, F, WG, diag = r.W, r.F, r.WG, r.diagnostics  # (m, n), (m, n) = x M^T, (m, n)
        norms = np.sqrt(np.maximum(np.einsum("jk,jk->j", WG, W), 1e-12))  # (m,) |r_j|
        cos = (F @ W.T) / norms[None, :]  # (m queries, m refined)
        return np.clip((1.0 - cos.max(axis=1)) * 0.5, 0.0, 1.0), {f"refine_{k}": v for k, v in diag.items()}
