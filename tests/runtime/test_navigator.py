"""The navigator MLP and its optimiser: expanded forward == naive pairwise forward, hand-written
backward == finite differences (float64) and torch autograd (float32 tolerance), AdamW == torch."""

from __future__ import annotations

import numpy as np
import pytest

from edge_foct.runtime import navigator as nv
from edge_foct.runtime.adamw import AdamWState, adamw_step
from edge_foct.runtime.transport import cost_matrix, ct_loss_grad

torch = pytest.importorskip("torch")  # tests only: the runtime never imports it


def naive_forward(p: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Builds the (M, Q, D) tensor the runtime avoids: the reference."""
    sq = (x[:, None, :] - y[None, :, :]) ** 2
    a = sq @ p["W1"] + p["b1"]
    a = np.where(a > 0, a, 0.01 * a) @ p["W2"] + p["b2"]
    return (np.where(a > 0, a, 0.01 * a) @ p["W3"])[..., 0] + p["b3"][0]


def problem(m=7, q=11, d=5, hidden=(6, 4), seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((m, d)), rng.standard_normal((q, d))
    p = nv.torch_default_init(d, hidden, seed=seed + 1)
    cast = lambda a: a.astype(dtype)  # noqa: E731
    return cast(x), cast(y), {k: cast(v) for k, v in p.items()}


@pytest.mark.parametrize("shape", [(7, 11, 5, (6, 4)), (1, 3, 2, (1, 1)), (13, 2, 9, (5, 3))])
def test_expanded_forward_equals_naive(shape):
    m, q, d, hidden = shape
    x, y, p = problem(m, q, d, hidden)
    got, _ = nv.forward(p, x, y)
    np.testing.assert_allclose(got, naive_forward(p, x, y), rtol=1e-12, atol=1e-12)


def test_blocked_forward_and_backward_equal_unblocked(monkeypatch):
    x, y, p = problem(9, 23, 6, (7, 5))
    g = np.random.default_rng(3).standard_normal((9, 23))
    want_d, want_g = nv.forward(p, x, y)[0], nv.backward(p, x, y, g)
    monkeypatch.setattr(nv, "BLOCK_FLOATS", 40)  # forces several query and hidden blocks
    got_d, cache = nv.forward(p, x, y, keep=True)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-12, atol=1e-12)
    for got in (nv.backward(p, x, y, g), nv.backward(p, x, y, g, cache)):
        for k in p:
            np.testing.assert_allclose(got[k], want_g[k], rtol=1e-10, atol=1e-12)


def ct_objective(p, x, y, cost, rho=0.5) -> float:
    return ct_loss_grad(cost, nv.forward(p, x, y)[0], rho)[0]


def test_backward_matches_finite_differences_through_the_ct_loss():
    x, y, p = problem(6, 8, 4, (5, 3), seed=4)
    x, y = 0.5 * x, 0.5 * y
    cost = cost_matrix(x, y)
    _, grad_d, _, _ = ct_loss_grad(cost, nv.forward(p, x, y)[0])
    grads = nv.backward(p, x, y, grad_d)
    rng, h = np.random.default_rng(5), 1e-6
    for k, v in p.items():
        for idx in [tuple(rng.integers(0, s) for s in v.shape) for _ in range(4)]:
            old = v[idx]
            v[idx] = old + h
            up = ct_objective(p, x, y, cost)
            v[idx] = old - h
            down = ct_objective(p, x, y, cost)
            v[idx] = old
            assert abs((up - down) / (2 * h) - grads[k][idx]) <= 1e-6 * (1 + abs(grads[k][idx])), (k, idx)


def torch_ct(p32: dict, x, y, rho=0.5):
    """The authors' forward and loss in torch, from the (M, Q, D) tensor, for autograd."""
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p32.items()}
    mse = (torch.tensor(x)[:, None] - torch.tensor(y)) ** 2
    cost = mse.sum(-1)
    a = torch.nn.functional.leaky_relu(mse @ tp["W1"] + tp["b1"])
    a = torch.nn.functional.leaky_relu(a @ tp["W2"] + tp["b2"])
    d = -((a @ tp["W3"])[..., 0] + tp["b3"][0])
    fwd, bwd = torch.softmax(d, dim=1), torch.softmax(d, dim=0)
    loss = rho * (cost * fwd).sum(1).mean() + (1 - rho) * (cost * bwd).sum(0).mean()
    loss.backward()
    return float(loss.detach()), {k: t.grad.numpy() for k, t in tp.items()}


def test_backward_matches_torch_autograd_in_float32():
    x, y, p = problem(12, 30, 16, (8, 4), seed=6, dtype=np.float32)
    cost = cost_matrix(x, y)
    loss, grad_d, _, _ = ct_loss_grad(cost, nv.forward(p, x, y)[0])
    grads = nv.backward(p, x, y, grad_d)
    t_loss, t_grads = torch_ct(p, x, y)
    assert abs(loss - t_loss) <= 1e-5 * abs(t_loss)
    # b3's true gradient is 0 (a softmax ignores a constant shift): compare on the global scale
    scale = max(np.abs(g).max() for g in t_grads.values())
    for k in p:
        assert np.abs(grads[k] - t_grads[k]).max() <= 1e-4 * scale, k


def test_soft_nn_init_is_cost_over_tau():
    x, y, _ = problem(5, 9, 7)
    p = nv.soft_nn_init(7, (4, 3), tau=0.37)
    np.testing.assert_allclose(nv.forward(p, x, y)[0], cost_matrix(x, y) / 0.37, rtol=1e-6)


def test_torch_default_init_matches_torch_linear_bounds_and_shapes():
    p = nv.torch_default_init(1024, (512, 256), seed=0)
    assert {k: v.shape for k, v in p.items()} == {"W1": (1024, 512), "b1": (512,), "W2": (512, 256),
                                                  "b2": (256,), "W3": (256, 1), "b3": (1,)}
    lin = torch.nn.Linear(1024, 512)
    assert np.abs(p["W1"]).max() <= lin.weight.abs().max().item() * 1.01
    assert abs(p["W1"].std() - lin.weight.std().item()) <= 0.02 * lin.weight.std().item()


def test_flops_of_the_paper_procedure():
    per_image = 2 * 100 * nv.flops_per_step(400, 1764, 1024, (512, 256))
    assert 4e14 <= per_image <= 7e14  # "about 5e14 FLOPs per image" (DESIGN.md 2.2)


def test_adamw_matches_torch():
    # torch.optim.AdamW.step() calls this functional form; calling it directly avoids importing
    # torch._dynamo (~30 s on a loaded 2-core box) while running the same update code.
    from torch.optim.adamw import adamw as torch_adamw

    rng = np.random.default_rng(7)
    params = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
    tp = [torch.tensor(params[k].copy()) for k in ("a", "b")]
    tm, tv = [torch.zeros_like(t) for t in tp], [torch.zeros_like(t) for t in tp]
    steps = [torch.tensor(0.0) for _ in tp]
    state = AdamWState.zeros_like(params)
    for _ in range(5):
        grads = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
        torch_adamw(tp, [torch.tensor(grads[k]) for k in ("a", "b")], tm, tv, [], steps, foreach=False,
                    amsgrad=False, beta1=0.9, beta2=0.999, lr=1e-2, weight_decay=0.1, eps=1e-8, maximize=False)
        adamw_step(params, grads, state, lr=1e-2, weight_decay=0.1)
    assert state.t == 5
    for t, k in zip(tp, ("a", "b")):
        np.testing.assert_allclose(params[k], t.numpy(), rtol=1e-5, atol=1e-6)
