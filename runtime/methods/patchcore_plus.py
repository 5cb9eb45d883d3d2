"""PatchCore+ (seed 001, sec. 4-5.1): per query, refine the prototypes by Sinkhorn EM, then score.

Reading of the paper and DESIGN 2.3. Prototypes M (n, c) are a coreset of the support patches.
For a query f (m, c) the transform W (m, n) gives m refined prototypes R = W M (m, c), one per query
patch (composition refinement: each is a mix of the n originals). The OT term is between the n
ORIGINAL prototypes (uniform 1/n) and the m REFINED prototypes (uniform 1/m), with cost
C_ij = ||M_i - R_j||^2, C (n, m). It pulls each refined prototype towards the originals it is
coupled with, so an anomalous query patch is reconstructed less well by its own refined prototype.

Objective, T fixed:  L(W; T) = ||f - W M||_F^2 + lam_eff <T, C(W)> (eq. 7). The paper leaves four
things open; each is a parameter, and benchmarks/README.md ("PatchCore+ audit") measures them:
- ``lam_scale``: T carries a total mass of 1 while the reconstruction sums over m patches, so as
  written ("sum", lam_eff = lam) the OT term weighs lam / m per patch and changes no score; "mean"
  (the reconstruction averaged over patches, lam_eff = lam * m) gives it lam per patch.
- ``mstep``: "gradient" is sec. 4.2's step (below); "closed" the exact minimiser for T fixed
  (Algorithm 1 "minimizing", Table 7 "Closed PatchCore+"): R_j = (R0_j + lam_eff sum_i T_ij M_i) /
  (1 + lam_eff b_j), the least-squares reconstruction R0_j pulled towards the prototypes the plan
  couples with it.
- ``score``: "nearest" (Eq. 6, min over the m refined prototypes) or "own" (||f_j - R_j||^2).
- ``marginals``: "balanced" (the paper's 1/n and 1/m) or "query" (semi-relaxed: only 1/m).

- init   W0 = F (G + ridge I)^-1 with F = f M^T (m, n), G = M M^T (n, n): no inverse; the solve
  (G + ridge I) X = M is done once per bank, then W0 = f X^T comes out of the same GEMM as F.
- E-step T = Sinkhorn(C(W)) (``sinkhorn_warm``: log-domain iterates, one exp per E-step), uniform
  marginals, fixed iteration count, eps fixed per query at eps_rel * median(C(W0)) (relative to
  the cost scale, one OT_eps for the whole EM).
- M-step ("gradient") one gradient step, grad_W L = 2 (W G - F) + 2 lam (diag(b) W G - T^T G), b = T^T 1.
  Step: rows of W decouple and row j has Hessian 2 (1 + lam b_j) G, so grad L is Lipschitz with
  Lc = 2 (1 + lam max_j b_j) sigma_max(G); step = step_scale / Lc never increases L(.; T) for
  step_scale <= 1 (any step_scale < 2 still decreases this quadratic). W and W G are updated
  together by one product with [G | G^2] (see ``mstep``).
- score  s_j = min_r ||f_j - R_r||^2 over the m refined prototypes ("nearest").
Everything after F is in the n-dimensional coefficient space (G instead of M): O(m n^2) per step,
plus one (m, m) distance matrix for the score. Nothing is (m, n, c).

Online memory (seed 001 Table 6, "Online PatchCore+": "incorporating refined prototypes into the
memory bank"; off unless ``online_capacity`` > 0, preset "online"). The paper gives no rule for
which refined prototypes enter the bank; ours (a defect must never become normal memory):
- admission: only a query judged good at the bank's threshold (``set_gate``; the image score, the
  max patch score, <= gate, every patch score finite) enters; no gate set admits nothing (fails
  closed, unlike FOCT's paper mode). Scoring comes first, from the memory before this query.
- what: the query's refined prototypes R = W* M (m, c), reduced like a support image to a coreset
  of ``coreset_ratio`` * m rows (one more "support image" per good query, as alpha does at fit).
- bound: the online rows live in an ``EpisodicMemory`` of ``online_capacity`` rows (coreset-
  compressed to ``online_keep`` of them when full), so the bank is at most n + online_capacity
  rows. The next query refines [M; online rows] (Prototypes rebuilt once per admission).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..coreset import coreset_size, greedy_coreset, support_coreset
from ..episodic import EpisodicMemory, admissible
from ..errors import EdgeFoctError
from ..knn import sq_norms
from ..sinkhorn import semi_relaxed_plan, sinkhorn_warm
from .base import Method, PatchScores, SupportSet


LAM_SCALES = ("sum", "mean")
MSTEPS = ("gradient", "closed")
SCORES = ("nearest", "own")
MARGINALS = ("balanced", "query")


@dataclass(frozen=True)
class PatchCorePlusParams:
    coreset_ratio: float = 0.05  # alpha: fraction of the K*Q support patches kept as prototypes
    projection_dim: int = 128  # coreset distance computed after a random projection to this
    seed: int = 0
    lam: float = 0.3  # weight of the OT term
    #: "sum": Eq. 7 as written, ||f - W M||^2 summed over the m patches against a plan of mass 1 (the
    #: OT term weighs lam / m per patch); "mean": the reconstruction averaged over patches (lam per patch)
    lam_scale: str = "mean"  # chosen leave-one-category-out (benchmarks/README.md, PatchCore+ audit)
    em_iters: int = 10  # N EM iterations
    sinkhorn_iters: int = 5  # per E-step, warm-started: 50 in all per query (the error is reported)
    eps_rel: float = 0.1  # Sinkhorn eps / median cost at W0
    #: "balanced": both marginals enforced, 1/n on the prototypes and 1/m on the refined ones (Eq. 5);
    #: "query": only the refined prototypes' 1/m, the prototypes' free (semi-relaxed OT, not the paper)
    marginals: str = "balanced"
    ridge_rel: float = 1e-3  # W0 ridge / mean squared prototype norm (keeps the solve well posed)
    #: "gradient": one gradient step of step_scale / Lipschitz per EM iteration (sec. 4.2);
    #: "closed": the exact minimiser of L(W; T) for the plan T (seed 001 Table 7, "Closed PatchCore+")
    mstep: str = "closed"  # chosen with lam_scale
    step_scale: float = 1.0  # M-step = step_scale / Lipschitz constant ("gradient" only)
    #: "nearest": s_j = min over the m refined prototypes (Eq. 6); "own": s_j = ||f_j - (W M)_j||^2
    score: str = "nearest"
    #: online memory (seed 001 Table 6): rows of refined prototypes of good queries kept beside the
    #: bank's n; 0: off (PatchCore+ as in Table 1). Fixed a priori, not tuned (module docstring)
    online_capacity: int = 0
    online_keep: float = 0.5  # share of the online rows a full online memory is coreset-reduced to

    def __post_init__(self) -> None:
        if self.em_iters < 1 or self.sinkhorn_iters < 1:
            raise EdgeFoctError(f"patchcore+: em_iters={self.em_iters}, sinkhorn_iters={self.sinkhorn_iters}; "
                                "use at least 1 of each")
        if self.eps_rel <= 0 or self.ridge_rel <= 0 or self.lam < 0 or not 0 < self.step_scale < 2:
            raise EdgeFoctError(f"patchcore+: eps_rel={self.eps_rel}, ridge_rel={self.ridge_rel} must be > 0, "
                                f"lam={self.lam} >= 0 and step_scale={self.step_scale} in (0, 2)")
        if self.online_capacity < 0 or not 0 < self.online_keep < 1:
            raise EdgeFoctError(f"patchcore+: online_capacity={self.online_capacity} must be >= 0 and "
                                f"online_keep={self.online_keep} in (0, 1)")
        for name, allowed in (("lam_scale", LAM_SCALES), ("mstep", MSTEPS), ("score", SCORES),
                              ("marginals", MARGINALS)):
            if getattr(self, name) not in allowed:
                raise EdgeFoctError(f"patchcore+: {name}={getattr(self, name)!r}; choose one of {list(allowed)}")

    def lam_effective(self, m: int) -> float:
        """The weight of <T, C> against the SUMMED reconstruction ||f - W M||^2 for m query patches."""
        return self.lam * m if self.lam_scale == "mean" else self.lam


def init_weights(F: np.ndarray, G: np.ndarray, ridge: float) -> np.ndarray:
    """W0 (m, n) = F (G + ridge I)^-1 by a solve. F (m, n), G (n, n) symmetric."""
    a = G + np.asarray(ridge, G.dtype) * np.eye(G.shape[0], dtype=G.dtype)
    return np.linalg.solve(a, F.T).T


def transport_cost(W: np.ndarray, WG: np.ndarray, proto_norms: np.ndarray) -> np.ndarray:
    """C (n, m) = ||M_i - (W M)_j||^2 from W (m, n), WG = W G (m, n), proto_norms = diag(G) (n,)."""
    refined_norms = np.einsum("jk,jk->j", WG, W)  # (m,) ||R_j||^2
    C = proto_norms[:, None] + refined_norms[None, :] - 2.0 * WG.T  # (n, m)
    return np.maximum(C, 0.0, out=C)


def objective(W: np.ndarray, WG: np.ndarray, F: np.ndarray, f_sq: float, T: np.ndarray, C: np.ndarray,
              lam: float) -> float:
    """L(W; T) = ||f - W M||^2 + lam <T, C>, with ||f||^2 = f_sq and C = C(W)."""
    recon = f_sq - 2.0 * np.vdot(W, F) + np.vdot(W, WG)  # ||f||^2 - 2<W, F> + <W G, W>
    return float(recon + lam * np.vdot(T, C))


def mstep_gradient(WG: np.ndarray, F: np.ndarray, G: np.ndarray, T: np.ndarray, lam: float) -> np.ndarray:
    """dL/dW (m, n) at W (through WG = W G), T (n, m) fixed."""
    b = T.sum(axis=0)  # (m,) mass received by each refined prototype
    return 2.0 * (WG - F) + (2.0 * lam) * (b[:, None] * WG - T.T @ G)


def lipschitz(sigma_max: float, T: np.ndarray | None, lam: float) -> float:
    """Lipschitz constant of dL/dW for T fixed: 2 (1 + lam max_j b_j) sigma_max(G); T None: lam = 0."""
    return float(2.0 * (1.0 + (lam * T.sum(axis=0).max() if T is not None else 0.0)) * sigma_max)


def mstep(W: np.ndarray, WG: np.ndarray, F: np.ndarray, FG: np.ndarray, G_G2: np.ndarray, T: np.ndarray | None,
          lam: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """W' = W - step * dL/dW and W' G, from ONE product with G_G2 = [G | G^2] (n, 2n).

    The gradient is 2 (V G - F) with V = diag(1 + lam b) W - lam T^T (= mstep_gradient), and
    W' G = W G - 2 step (V G^2 - F G): one small GEMM per EM iteration instead of three (small
    GEMMs are what a busy machine's BLAS threads make slow). FG = F G (m, n). T None: no OT term.
    """
    n = W.shape[1]
    V = W if T is None else (1.0 + lam * T.sum(axis=0))[:, None] * W - lam * T.T  # (m, n)
    VG = V @ G_G2  # (m, 2n) = [V G | V G^2]
    return W - (2.0 * step) * (VG[:, :n] - F), WG - (2.0 * step) * (VG[:, n:] - FG)


@dataclass(frozen=True)
class Prototypes:
    """M (n, c) and what every query reuses: G = M M^T (n, n), G_G2 = [G | G^2] (n, 2n),
    sigma_max(G), the ridge, and lift = [M; (G + ridge I)^-1 M] (2n, c), so that
    f lift^T = [F | W0] is one GEMM per query (the ridge system is solved once, here)."""

    M: np.ndarray
    gram: np.ndarray
    G_G2: np.ndarray
    sigma_max: float
    ridge: float
    lift: np.ndarray

    @classmethod
    def build(cls, M: np.ndarray, ridge_rel: float) -> "Prototypes":
        G = M @ M.T  # (n, n)
        ridge = ridge_rel * float(np.diagonal(G).mean())
        coef = init_weights(M.T, G, ridge).T  # (n, c) = (G + ridge I)^-1 M, by a solve
        sigma = float(np.linalg.eigvalsh(G.astype(np.float64))[-1])
        return cls(M, G, np.hstack([G, G @ G]), sigma, ridge,
                   np.ascontiguousarray(np.vstack([M, coef.astype(M.dtype)])))


def mstep_closed(W0: np.ndarray, W0G: np.ndarray, G: np.ndarray, T: np.ndarray, lam: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The exact minimiser of L(W; T) for the plan T (n, m), and W G: W_j = (W0_j + lam T_:j) / (1 + lam b_j).

    With the ridge r in the Gram metric (G + r I in both terms, as in W0 = F (G + r I)^-1) the
    gradient of row j is 2 (W_j - W0_j)(G + r I) + 2 lam (b_j W_j - T_:j)(G + r I); it vanishes
    there. In feature space: R_j = (R0_j + lam sum_i T_ij M_i) / (1 + lam b_j), the least-squares
    reconstruction pulled towards the barycentre of the prototypes the plan couples with it.
    W0, W0G (m, n); G (n, n). One (m, n) x (n, n) product (T^T G).
    """
    lam = np.asarray(lam, W0.dtype)
    inv = (1.0 / (1.0 + lam * T.sum(axis=0)))[:, None].astype(W0.dtype)  # (m, 1)
    Tt = T.T.astype(W0.dtype)  # (m, n)
    return (W0 + lam * Tt) * inv, (W0G + lam * (Tt @ G)) * inv


@dataclass(frozen=True)
class Refinement:
    """One query's refinement. W (m, n), F = f M^T (m, n), WG = W G (m, n); plan T (n, m) and the
    cost C(W) (n, m) of the last E-step (None without the transport term); diagnostics."""

    W: np.ndarray
    F: np.ndarray
    WG: np.ndarray
    plan: np.ndarray | None
    cost: np.ndarray | None
    diagnostics: dict

    def own_residuals(self, f: np.ndarray) -> np.ndarray:
        """(m,) ||f_j - (W M)_j||^2 = ||f_j||^2 - 2 W_j.F_j + W_j.(W G)_j, from f (m, c)."""
        r = sq_norms(f) - 2.0 * np.einsum("jk,jk->j", self.W, self.F) + np.einsum("jk,jk->j", self.W, self.WG)
        return np.maximum(r, 0.0)

    def nearest_refined(self, f: np.ndarray) -> np.ndarray:
        """(m,) min_r ||f_j - (W M)_r||^2 over the m refined prototypes: one (m, m) distance matrix."""
        refined_norms = np.einsum("jk,jk->j", self.WG, self.W)  # (m,)
        d = sq_norms(f)[:, None] + refined_norms[None, :] - 2.0 * (self.F @ self.W.T)  # (m, m)
        return np.maximum(d.min(axis=1), 0.0)


def refine(f: np.ndarray, P: Prototypes, p: PatchCorePlusParams) -> Refinement:
    """f (m, c) -> the refinement of the prototypes P for this query (see the module docstring)."""
    n, G = P.M.shape[0], P.gram
    m = f.shape[0]
    proto_norms = np.diagonal(G).copy()  # (n,)
    FW = f @ P.lift.T  # (m, 2n)
    F, W = FW[:, :n], FW[:, n:]  # W0 = F (G + ridge I)^-1
    WG = F - P.ridge * W  # W0 G = F (G + r I)^-1 G = F - r W0: no product needed
    lam = p.lam_effective(m)
    if lam == 0.0:  # "no-ot": T has no weight in L, so no E-step (and the closed M-step is W0 itself)
        if p.mstep == "gradient":
            W, WG = _descend_without_transport(W, WG, F, F @ G, P, p)
        return Refinement(W, F, WG, None, None, {"memory_size": int(n)})
    W0, W0G = W, WG
    FG = F @ G if p.mstep == "gradient" else None  # (m, n)
    f_sq = float(np.vdot(f, f))
    C = transport_cost(W, WG, proto_norms)
    scale = float(np.median(C)) or float(C.mean()) or 1.0  # a zero median only for degenerate inputs
    eps = p.eps_rel * scale
    pot_f, pot_g = np.zeros(n, C.dtype), np.zeros(m, C.dtype)
    before = None
    for _ in range(p.em_iters):
        # E-step, warm-started from the last potentials, so the EM accumulates iterations across steps
        if p.marginals == "balanced":
            ot = sinkhorn_warm(C, None, None, eps, p.sinkhorn_iters, pot_f, pot_g)
            pot_f, pot_g = ot.f, ot.g
        else:
            ot = semi_relaxed_plan(C, eps)
        if before is None:
            before = objective(W, WG, F, f_sq, ot.plan, C, lam)
        if p.mstep == "closed":
            W, WG = mstep_closed(W0, W0G, G, ot.plan, lam)
        else:
            step = p.step_scale / lipschitz(P.sigma_max, ot.plan, lam)
            W, WG = mstep(W, WG, F, FG, P.G_G2, ot.plan, lam, step)
        C = transport_cost(W, WG, proto_norms)
    T = ot.plan
    diag = {"memory_size": int(n), "eps": eps, "marginal_error": ot.marginal_error,
            "objective_before": before, "objective_after": objective(W, WG, F, f_sq, T, C, lam),
            # mean over refined prototypes of the largest share one original gets (1/n = uniform)
            "concentration": float((T.max(axis=0) / T.sum(axis=0)).mean())}
    return Refinement(W, F, WG, T, C, diag)


def _descend_without_transport(W: np.ndarray, WG: np.ndarray, F: np.ndarray, FG: np.ndarray, P: Prototypes,
                               p: PatchCorePlusParams) -> tuple[np.ndarray, np.ndarray]:
    """lam = 0: the em_iters M-steps on ||f - W M||^2 alone, without the Sinkhorn iterations whose
    plan they would ignore. Returns W, W G."""
    step = p.step_scale / lipschitz(P.sigma_max, None, 0.0)
    for _ in range(p.em_iters):
        W, WG = mstep(W, WG, F, FG, P.G_G2, None, 0.0, step)
    return W, WG


class PatchCorePlus(Method):
    name = "patchcore+"
    Params = PatchCorePlusParams
    #: a reconstruction's residual grows as the memory it mixes shrinks: threshold LOO fits keep its size
    loo_matched_capacity = ("coreset_ratio",)
    #: "no-ot": the ablation without the transport term (seed 001 Table 2, row "W* without T*");
    #: "suppress": the reading in which the term acts (lambda per patch, exact M-step), the defaults,
    #: chosen leave-one-category-out; "as-written": Eq. 7 literally (lambda / m per patch, one
    #: 1/Lipschitz gradient step per EM iteration), in which the term changes no score (README audit)
    #: "online": refined prototypes of queries judged good at the threshold join the memory
    #: (seed 001 Table 6; admission rule in the module docstring)
    PRESETS = {"no-ot": {"lam": 0.0}, "suppress": {"lam_scale": "mean", "mstep": "closed"},
               "as-written": {"lam_scale": "sum", "mstep": "gradient"}, "online": {"online_capacity": 128}}

    def __init__(self, prototypes: np.ndarray, params: PatchCorePlusParams) -> None:
        self.prototypes = np.ascontiguousarray(prototypes, dtype=np.float32)  # (n, c)
        self.params = params
        self._protos = Prototypes.build(self.prototypes, params.ridge_rel)
        self.online = params.online_capacity > 0  # instance-level: the "online" preset learns, others do not
        self.gate: float | None = None
        self.memory = EpisodicMemory(self.prototypes.shape[1], params.online_capacity, params.online_keep,
                                     params.projection_dim, params.seed)

    @classmethod
    def fit(cls, support: SupportSet, params: PatchCorePlusParams) -> "PatchCorePlus":
        return cls(support_coreset(support.features, params.coreset_ratio, params.projection_dim, params.seed), params)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"prototypes": self.prototypes}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: PatchCorePlusParams) -> "PatchCorePlus":
        return cls(arrays["prototypes"], params)

    @classmethod
    def flops(cls, m_memory: int, q: int, d: int, params: PatchCorePlusParams | None = None) -> float:
        p, n = params or PatchCorePlusParams(), m_memory
        init = 2.0 * q * d * 2 * n  # [F | W0] = f lift^T
        cost = 6.0 * q * n  # C(W) from W G, and the warm-start shift
        if p.lam == 0.0:  # "no-ot": no E-step, no cost; the closed M-step is W0 itself
            em = p.em_iters * (2.0 * q * n * 2 * n + 8.0 * q * n) + 2.0 * q * n * n if p.mstep == "gradient" else 0.0
        else:
            sinkhorn = (2 * p.sinkhorn_iters + 1) * 6.0 * q * n  # softmins and the plan, ~6 ops per entry
            if p.mstep == "gradient":  # F G once, then V [G | G^2] and the updates
                init += 2.0 * q * n * n
                mstep = 2.0 * q * n * 2 * n + 8.0 * q * n
            else:  # T^T G and the two scaled sums
                mstep = 2.0 * q * n * n + 6.0 * q * n
            em = cost + p.em_iters * (sinkhorn + mstep + cost)
        # (q, q) distances to the refined prototypes, or each patch's own residual
        score = 2.0 * q * q * n + 3.0 * q * q if p.score == "nearest" else 4.0 * q * n + 2.0 * q
        return init + em + score

    def score(self, features: np.ndarray, *, update: bool = True) -> PatchScores:
        f = np.asarray(features, dtype=np.float32)  # (m, c)
        r = refine(f, self._protos, self.params)
        s = r.nearest_refined(f) if self.params.score == "nearest" else r.own_residuals(f)
        diag = r.diagnostics
        if self.online:
            added = self._admit(r, s) if update else 0
            diag = {**diag, "admitted": added, "online_rows": len(self.memory)}
        return PatchScores(s.astype(np.float32), diag)

    # --- online memory (preset "online"; module docstring) -------------------------------------
    def _admit(self, r: Refinement, s: np.ndarray) -> int:
        """Add a coreset of the query's refined prototypes when the query is judged good at the gate.
        r: this query's refinement, s (m,) its patch scores. -> rows added (0: refused)."""
        if self.gate is None or not np.isfinite(s).all() or not admissible(s, self.gate).all():
            return 0
        refined = (r.W @ self._protos.M).astype(np.float32)  # (m, c) = W* M, the refined prototypes
        keep = greedy_coreset(refined, coreset_size(refined.shape[0], self.params.coreset_ratio),
                              self.params.projection_dim, seed=self.params.seed)
        rows = refined[np.sort(keep)]
        self.memory.add(rows[:0], rows)
        self._rebuild()
        return int(rows.shape[0])

    def _rebuild(self) -> None:
        """Prototypes of [M; online rows] (n + L, c) for the next query."""
        online = self.memory.rows()[0]
        M = np.ascontiguousarray(np.vstack([self.prototypes, online])) if len(online) else self.prototypes
        self._protos = Prototypes.build(M, self.params.ridge_rel)

    def set_gate(self, threshold: float | None) -> None:
        self.gate = None if threshold is None else float(threshold)

    def episodic_state(self) -> dict[str, np.ndarray]:
        return self.memory.state() if self.online else {}

    def restore_episodic(self, arrays: dict[str, np.ndarray]) -> None:
        if self.online and arrays:
            self.memory.restore(arrays)
            self._rebuild()
