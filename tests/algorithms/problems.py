"""Small float64 problems with known meta-gradients, shared by the algorithm tests."""

from __future__ import annotations

import torch
from torch import Tensor

DT = torch.float64


def spd(n: int, gen: torch.Generator, floor: float = 0.5) -> Tensor:
    """A random symmetric positive definite matrix with eigenvalues >= ``floor``."""
    q = torch.randn(n, n, generator=gen, dtype=DT)
    return q @ q.T / n + floor * torch.eye(n, dtype=DT)


def quadratic_loss(params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
    """``1/2 (theta - c)^T M (theta - c)`` with ``theta = concat(params)``, batch ``(M, c)``."""
    m, center = batch
    r = torch.cat([v.reshape(-1) for v in params.values()]) - center
    return 0.5 * r @ m @ r


def quadratic_task(n: int, gen: torch.Generator):
    """``(A, c), (B, d)``: support and query quadratics."""
    return (spd(n, gen), torch.randn(n, generator=gen, dtype=DT)), (
        spd(n, gen),
        torch.randn(n, generator=gen, dtype=DT),
    )


def mlp_loss(params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
    """Mean squared error of a tanh MLP written by hand (independent of ``metalearn.models``)."""
    x, y = batch
    h = torch.tanh(x @ params["l1.weight"].T + params["l1.bias"])
    h = torch.tanh(h @ params["l2.weight"].T + params["l2.bias"])
    out = h @ params["head.weight"].T + params["head.bias"]
    return ((out.squeeze(-1) - y) ** 2).mean()


def mlp_params(gen: torch.Generator, hidden: int = 16, dim: int = 2) -> dict[str, Tensor]:
    shapes = {
        "l1.weight": (hidden, dim),
        "l1.bias": (hidden,),
        "l2.weight": (hidden, hidden),
        "l2.bias": (hidden,),
        "head.weight": (1, hidden),
        "head.bias": (1,),
    }
    return {k: 0.5 * torch.randn(s, generator=gen, dtype=DT) for k, s in shapes.items()}


def regression_task(gen: torch.Generator, n_support: int = 20, n_query: int = 25, dim: int = 2):
    """A sine-wave regression task: ``y = a sin(x . w + b)``."""
    a, b = 0.5 + torch.rand(2, generator=gen, dtype=DT)
    w = torch.randn(dim, generator=gen, dtype=DT)

    def points(n: int):
        x = 2 * torch.rand(n, dim, generator=gen, dtype=DT) - 1
        return x, a * torch.sin(x @ w + b)

    return points(n_support), points(n_query)


def stack_tasks(tasks):
    """``[(support, query), ...]`` -> ``(support, query)`` with a leading task dimension."""
    supports, queries = zip(*tasks, strict=True)
    stack = lambda items: tuple(torch.stack(t) for t in zip(*items, strict=True))  # noqa: E731
    return stack(supports), stack(queries)


def unrolled_meta_grad(loss_fn, params, support, query, steps, inner_lr, adapt=None, lam=None):
    """Reference meta-gradient by plain autograd through an explicitly unrolled inner loop
    (``torch.autograd.grad`` with ``create_graph``; no ``torch.func``). With ``lam`` the loop is
    iMAML's proximal one, whose unrolled derivative tends to the implicit one as it converges."""
    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    keys = [k for k in theta if adapt is None or k.split(".")[0] in adapt]
    fast = {k: theta[k] for k in keys}
    for _ in range(steps):
        grads = torch.autograd.grad(
            loss_fn({**theta, **fast}, support), list(fast.values()), create_graph=True
        )
        fast = {
            k: f - inner_lr * (g + (lam * (f - theta[k]) if lam else 0))
            for (k, f), g in zip(fast.items(), grads, strict=True)
        }
    meta = loss_fn({**theta, **fast}, query)
    grads = torch.autograd.grad(meta, list(theta.values()), allow_unused=True)
    return {
        k: torch.zeros_like(theta[k]) if g is None else g for k, g in zip(theta, grads, strict=True)
    }


def rel_err(x: dict[str, Tensor], y: dict[str, Tensor]) -> float:
    """``||x - y|| / ||y||`` over all keys together (``||x - y||`` when ``y`` is zero)."""
    num = sum(((x[k] - y[k]) ** 2).sum() for k in y)
    den = sum((y[k] ** 2).sum() for k in y)
    return float((num / den).sqrt()) if den > 0 else float(num.sqrt())
