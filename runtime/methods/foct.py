"""FOCT and its ablations CT and OCT (seed 000; DESIGN.md 2.2 and 5): one core, three names.

    ct    conditional transport against the semantic memory (a plain coreset at ``alpha``)
    oct   ct + online episodic memory (one part: plain subsampling, no fg/bg split)
    foct  oct with a foreground-aware semantic memory [coreset(fg, alpha), coreset(bg, beta)]
          and an episodic memory kept in fg and bg parts

Per query (Q, D): cost C (M, Q) to the memory rows (semantic + episodic); navigator distances D;
backward map bwd = softmax_i(-D); patch score s_j = sum_i bwd_ij C_ij (image score = max, map as
PatchCore). Presets:

- ``paper``: the authors' procedure. Navigator D-512-256-1 re-initialised per query with torch's
  default Linear init, 100 AdamW steps at lr 2e-4, two fits per query (semantic memory -> pick
  episodic candidates; semantic + episodic -> score). Cost per image, M rows, Q patches, D dims:
  2 fits x 100 steps x ~3 x 2*M*Q*(D*512 + 512*256 + 256) FLOPs, ~5.5e14 at M=400, Q=1764,
  D=1024 (runtime/navigator.py ``flops_per_step``).
- ``edge``: navigator initialised to D = C / tau, tau = ``tau_ratio`` x the query's median
  nearest-neighbour cost, so step 0 is a soft nearest neighbour; ``steps`` warm AdamW steps
  (0 by default: fitting did not pay, benchmarks/README.md); one fit shared by selection and
  scoring (the query is scored, then admitted). With steps = 0 no MLP runs: the soft-NN maps
  (``transport.soft_nn_scores``' numbers) come from the same cost matrix PatchCore computes, in one
  step (``transport.soft_nn_transport``; beside an OpenVINO engine one f32 graph,
  runtime/engines/openvino_transport.py).
  Sparse pairs (each query's k nearest rows) are not offered: at steps = 0 the dense soft NN
  costs one GEMM, the one needed to find those k rows anyway, so sparsity saves nothing.

Foreground masks (foct): a support mask covering less than ``min_fg_fraction`` or more than
``max_fg_fraction`` of the patch grid is unusable (a failed estimate, or a product or texture
that fills the frame): all that image's patches go to the foreground part (sampled at alpha,
the denser ratio, so nothing is thinned by a split that means nothing). No masks at all: foct's
memory is oct's. Which rule applied per support image is logged and kept in the bank arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from .. import navigator
from ..coreset import coreset_size, greedy_coreset
from ..ct_step import navigator_distances
from ..errors import EdgeFoctError
from ..episodic import EpisodicMemory, admissible, select_candidates
from ..transport import SoftNNFit, cost_matrix, fit_from_maps, fit_navigator, nn_cost_scale, soft_nn_transport
from .base import Method, PatchScores, SupportSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoctParams:
    # semantic memory
    alpha: float = 0.10  # coreset ratio of foreground patches (ct/oct: of all patches)
    beta: float = 0.075  # coreset ratio of background patches (foct)
    min_fg_fraction: float = 0.02  # a support mask outside [min, max] of the grid is unusable
    #   (the same bounds as runtime/foreground.py applies to pixel masks)
    max_fg_fraction: float = 0.95
    projection_dim: int = 128  # coreset distances after a random projection to this
    # transport
    rho: float = 0.5  # CT loss: forward vs backward weight
    navigator_init: str = "soft_nn"  # "soft_nn": D = C / tau | "torch": the authors' random init
    tau_ratio: float = 0.5  # tau = tau_ratio x median nearest-neighbour cost of the query: chosen
    #   leave-one-category-out on the default backbone (benchmarks/foct_loco.py; 5 of 5 folds pooled over
    #   1 / 2 / 4 shots, 4 of 5 at 2 shots alone; 1.0
    #   had been tuned on MobileNetV2, D = 768; 0.1 ~ PatchCore, 2.0 too flat; benchmarks/README.md)
    hidden1: int = 512
    hidden2: int = 256
    steps: int = 0  # AdamW steps per fit
    lr: float = 2e-4
    weight_decay: float = 0.01  # torch AdamW default
    two_fits: bool = False  # paper: select on the semantic memory, then score on semantic + episodic
    # episodic memory (oct, foct)
    k_fg: int = 10  # patches admitted per query from foreground rows (the paper's text and its
    k_bg: int = 40  # ... from background rows             MPDD-like setting; 30/10 measured worse)
    capacity: int = 100  # L
    keep_ratio: float = 0.25  # each part's size after compression
    select_map: str = "backward"  # map whose per-row best query picks candidates: "backward" as the
    #   authors' code (select_features on the backward map), measured better than "forward"
    gate_image_ratio: float = 1.0  # an image scoring above ratio x gate admits nothing (1e9: off)
    gate_patch_ratio: float = 1.0  # a patch scoring above ratio x gate is never admitted
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value, allowed in (("navigator_init", self.navigator_init, ("soft_nn", "torch")),
                                     ("select_map", self.select_map, ("forward", "backward"))):
            if value not in allowed:
                raise EdgeFoctError(f"{name} = {value!r}; use one of {allowed}")
        if self.tau_ratio <= 0 or self.steps < 0:
            raise EdgeFoctError(f"tau_ratio = {self.tau_ratio}, steps = {self.steps}: need tau_ratio > 0, steps >= 0")


PRESETS = {
    "paper": {"navigator_init": "torch", "hidden1": 512, "hidden2": 256, "steps": 100, "lr": 2e-4,
              "two_fits": True, "select_map": "backward"},
    "edge": {"navigator_init": "soft_nn", "steps": 0, "two_fits": False},
}


class _Fit(NamedTuple):
    """One CT fit of a query against some memory rows."""

    scores: np.ndarray  # (Q,) s_j = sum_i bwd_ij C_ij
    best: tuple[np.ndarray, np.ndarray]  # per memory row: best query patch (M,), its probability (M,)
    concentration: float  # mean_j max_i bwd_ij
    ct_loss: float
    steps: int
    tau: float

    @classmethod
    def of(cls, t: SoftNNFit, steps: int) -> "_Fit":
        """The transport's result (runtime/transport.py ``SoftNNFit``) after ``steps`` navigator steps."""
        return cls(t.scores, (t.best_query, t.best_prob), t.concentration, t.ct_loss, steps, t.tau)


class TransportMethod(Method):
    """The shared core; subclasses only set name, ``online`` and ``uses_foreground``."""

    Params = FoctParams
    PRESETS: ClassVar[dict[str, dict]] = PRESETS

    def __init__(self, memory: np.ndarray, memory_fg: np.ndarray, params: FoctParams,
                 extra: dict[str, np.ndarray] | None = None) -> None:
        self.memory = np.ascontiguousarray(memory, np.float32)  # (Ms, D) semantic memory
        self.memory_fg = np.asarray(memory_fg, bool)  # (Ms,)
        self.params = params
        self.extra = extra or {}
        self.episodic = EpisodicMemory(self.memory.shape[1], params.capacity, params.keep_ratio,
                                       params.projection_dim, params.seed)
        self.gate: float | None = None
        self.queries_seen = 0
        self._fit_navigator, self._distances = fit_navigator, navigator_distances  # NumPy until use_backend

    # --- memory -----------------------------------------------------------------------------
    @classmethod
    def fit(cls, support: SupportSet, params: FoctParams) -> "TransportMethod":
        k, q, d = support.features.shape
        fg, frac, used = np.ones((k, q), bool), np.ones(k), np.zeros(k, bool)
        if cls.uses_foreground and support.foreground is not None:
            frac = support.foreground.mean(axis=1)
            used = (frac >= params.min_fg_fraction) & (frac <= params.max_fg_fraction)
            fg = np.where(used[:, None], support.foreground, True)
            for i in range(k):
                log.info("%s: support image %d foreground %.0f%% of the grid: %s", cls.name, i, 100 * frac[i],
                         "split fg/bg" if used[i] else "unusable mask, all patches foreground")
        x, lab = support.features.reshape(-1, d), fg.reshape(-1)
        parts = [(x[lab], params.alpha, True), (x[~lab], params.beta, False)]
        rows, labels = [], []
        for feats, ratio, is_fg in parts:
            idx = np.sort(greedy_coreset(feats, coreset_size(len(feats), ratio), params.projection_dim,
                                         seed=params.seed))
            rows.append(feats[idx])
            labels.append(np.full(len(idx), is_fg))
        extra = {"support_fg_fraction": frac.astype(np.float32), "support_mask_used": used}
        return cls(np.concatenate(rows), np.concatenate(labels), params, extra)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"memory": self.memory, "memory_fg": self.memory_fg, **self.extra}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: FoctParams) -> "TransportMethod":
        extra = {k: v for k, v in arrays.items() if k not in ("memory", "memory_fg")}
        return cls(arrays["memory"], arrays["memory_fg"], params, extra)

    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Memory rows (M, D) and their fg labels (M,): semantic first, then episodic."""
        if not (self.online and len(self.episodic)):
            return self.memory, self.memory_fg
        e, e_fg = self.episodic.rows()
        return np.concatenate([self.memory, e]), np.r_[self.memory_fg, e_fg]

    @classmethod
    def flops(cls, m_memory: int, q: int, d: int, params: FoctParams | None = None) -> float:
        p = params or FoctParams()
        cost = 2.0 * m_memory * q * d + 12.0 * m_memory * q  # cost GEMM; two softmaxes and expectations
        if p.navigator_init == "soft_nn" and p.steps == 0:
            return cost
        h = (p.hidden1, p.hidden2)
        fit = p.steps * navigator.flops_per_step(m_memory, q, d, h) + navigator.flops_per_step(m_memory, q, d, h) / 3
        return (2 if p.two_fits and cls.online else 1) * (cost + fit)

    # --- transport --------------------------------------------------------------------------
    def use_backend(self, backend) -> None:
        """The distance GEMMs (Method's), the edge transport step, the navigator fit and its final
        distances run on ``backend`` (runtime/compute_backend.py)."""
        super().use_backend(backend)
        self._fit_navigator, self._distances = backend.fit_navigator, backend.navigator_distances
        self._soft_nn_transport = backend.soft_nn_transport

    def _soft_nn_transport(self, mem: np.ndarray, feats: np.ndarray, tau_ratio: float, rho: float,
                           select_map: str) -> SoftNNFit:
        """The edge step on NumPy until ``use_backend`` (``transport.soft_nn_transport``, with this
        method's distance GEMM)."""
        return soft_nn_transport(mem, feats, tau_ratio, rho, select_map, sq=self._sq)

    def _transport(self, mem: np.ndarray, feats: np.ndarray) -> _Fit:
        """One CT fit of the query feats (Q, D) against mem (M, D)."""
        p = self.params
        if p.navigator_init == "soft_nn" and p.steps == 0:  # no MLP: D = C / tau, a soft nearest neighbour
            # the numbers of soft_nn_scores(mem, feats, tau), with the selection's best rows
            return _Fit.of(self._soft_nn_transport(mem, feats, p.tau_ratio, p.rho, p.select_map), 0)
        cost = cost_matrix(mem, feats, self._sq)  # (M, Q)
        tau = p.tau_ratio * nn_cost_scale(cost)
        dim, hidden = mem.shape[1], (p.hidden1, p.hidden2)
        nav = (navigator.soft_nn_init(dim, hidden, tau) if p.navigator_init == "soft_nn"  # warm start
               else navigator.torch_default_init(dim, hidden, seed=[p.seed, self.queries_seen, len(mem)]))
        self._fit_navigator(cost, mem, feats, nav, p.steps, p.lr, p.weight_decay, p.rho)
        dist = self._distances(nav, mem, feats)  # (M, Q)
        return _Fit.of(fit_from_maps(cost, dist, 1.0, tau, p.rho, p.select_map), p.steps)

    def _admit(self, fit: _Fit, feats: np.ndarray, row_fg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> the query patch indices admitted to the fg and the bg part."""
        p = self.params
        allowed = admissible(fit.scores, self.gate, p.gate_patch_ratio, p.gate_image_ratio)
        fg_idx, bg_idx = select_candidates(*fit.best, row_fg, p.k_fg, p.k_bg, allowed)
        self.episodic.add(feats[fg_idx], feats[bg_idx])
        return fg_idx, bg_idx

    def score(self, features: np.ndarray, *, update: bool = True) -> PatchScores:
        feats = np.ascontiguousarray(features, np.float32)  # (Q, D)
        learn = self.online and update
        steps, fg_idx, bg_idx = 0, np.zeros(0, np.int64), np.zeros(0, np.int64)
        if learn and self.params.two_fits:  # paper order: select on the semantic memory, admit, then score
            first = self._transport(self.memory, feats)
            fg_idx, bg_idx = self._admit(first, feats, self.memory_fg)
            steps += first.steps
        mem, mem_fg = self._rows()
        fit = self._transport(mem, feats)
        if learn and not self.params.two_fits:  # edge order: score, then admit from the same fit
            fg_idx, bg_idx = self._admit(fit, feats, mem_fg)
        self.queries_seen += 1
        diag = {"concentration": fit.concentration, "uniform": 1.0 / len(mem), "ct_loss": fit.ct_loss,
                "steps": steps + fit.steps, "admitted": len(fg_idx) + len(bg_idx), "admitted_fg": len(fg_idx),
                "admitted_bg": len(bg_idx), "memory_size": len(mem), "tau": fit.tau,
                "admitted_patches": sorted(int(j) for j in np.r_[fg_idx, bg_idx])}  # row-major grid indices
        return PatchScores(fit.scores, diag)

    # --- online state -----------------------------------------------------------------------
    def set_gate(self, threshold: float | None) -> None:
        self.gate = None if threshold is None else float(threshold)

    def episodic_state(self) -> dict[str, np.ndarray]:
        return self.episodic.state() if self.online else {}

    def restore_episodic(self, arrays: dict[str, np.ndarray]) -> None:
        if self.online and arrays:
            self.episodic.restore(arrays)


class CT(TransportMethod):
    name = "ct"


class OCT(TransportMethod):
    name = "oct"
    online = True


class FOCT(TransportMethod):
    name = "foct"
    online = True
    uses_foreground = True
