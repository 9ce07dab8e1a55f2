"""Parameters as plain ``dict[str, Tensor]`` and the few tree operations the learners need.

A *loss function* is ``loss_fn(params, batch) -> scalar Tensor``, pure in ``params`` (typically
``torch.func.functional_call(module, params, (x,))`` followed by a loss on ``y``). Everything
here is written with ``torch.func`` so that it composes with ``grad``, ``jvp`` and ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

Params = dict[str, Tensor]
LossFn = Callable[[Params, Any], Tensor]


def detach(params: Params) -> Params:
    """A copy of ``params`` cut from any autograd graph (the learners never extend the caller's)."""
    return {k: v.detach() for k, v in params.items()}


def axpy(alpha: float | Tensor, x: Params, y: Params) -> Params:
    """``alpha * x + y`` key by key (keys of ``y``)."""
    return {k: alpha * x[k] + y[k] for k in y}


def sub(x: Params, y: Params) -> Params:
    return {k: x[k] - y[k] for k in x}


def scale(alpha: float | Tensor, x: Params) -> Params:
    return {k: alpha * v for k, v in x.items()}


def dot(x: Params, y: Params) -> Tensor:
    """Inner product ``<x, y>`` summed over every key."""
    return sum((x[k] * y[k]).sum() for k in x)


def zeros_like(x: Params) -> Params:
    return {k: torch.zeros_like(v) for k, v in x.items()}


def adapted_keys(params: Params, adapt: Iterable[str] | None) -> list[str]:
    """Names of the parameters adapted in the inner loop.

    ``adapt=None`` adapts everything. Otherwise an entry selects the key itself or every key under
    it as a dotted prefix (``"head"`` selects ``head.weight`` and ``head.bias``: ANIL).
    """
    if adapt is None:
        return list(params)
    prefixes = list(adapt)
    keys = [k for k in params if any(k == p or k.startswith(p + ".") for p in prefixes)]
    if not keys:
        raise ValueError(
            f"adapt_keys={prefixes} selects none of the parameters {list(params)}; "
            "name parameters or dotted prefixes of them (e.g. 'head')"
        )
    return keys


def split(params: Params, keys: list[str]) -> tuple[Params, Params]:
    """``(fast, slow)``: the adapted parameters and the ones held at theta."""
    fast = {k: params[k] for k in keys}
    slow = {k: v for k, v in params.items() if k not in fast}
    return fast, slow


def merge(params: Params, fast: Params) -> Params:
    """``params`` with the adapted entries replaced, in the original key order."""
    return {k: fast.get(k, v) for k, v in params.items()}


def grad_fast(loss_fn: LossFn, slow: Params, batch: Any) -> Callable[[Params], Params]:
    """``fast -> d loss(fast, slow) / d fast`` for fixed ``slow`` parameters."""
    return torch.func.grad(lambda fast: loss_fn({**slow, **fast}, batch))


def grad_all(loss_fn: LossFn, slow: Params, batch: Any) -> Callable[[Params], Params]:
    """``fast -> d loss / d (fast, slow)``: the full gradient, as a function of ``fast`` alone."""

    def full_grad(fast: Params) -> Params:
        return torch.func.grad(lambda p: loss_fn(p, batch))({**slow, **fast})

    return full_grad


def hvp(loss_fn: LossFn, fast: Params, slow: Params, batch: Any, v: Params) -> Params:
    """Hessian-vector product of ``loss`` in the direction ``v`` of the fast parameters.

    Returns ``d/de [grad_(fast, slow) loss(fast + e v, slow)]`` at ``e = 0``: on the fast keys
    ``H_ff v``, on the slow keys the mixed term ``(d^2 loss / d slow d fast) v``, both from one
    forward-over-reverse pass (``jvp`` of ``grad``) and never forming a Hessian.
    """
    _, tangent = torch.func.jvp(grad_all(loss_fn, slow, batch), (fast,), (v,))
    return tangent


def hvp_at(loss_fn: LossFn, fast: Params, slow: Params, batch: Any) -> Callable[[Params], Params]:
    """``v -> hvp(loss_fn, fast, slow, batch, v)``, for several products at one point.

    Reverse-over-reverse: one ``vjp`` of the fast gradient builds its graph once, and each
    product is one backward pass through it (the Hessian is symmetric, so the pullback of ``v``
    is ``H_ff v`` on the fast keys and the mixed term on the slow keys). Two products at a
    state then cost one gradient and two backward passes instead of two forward-over-reverse
    passes. A loss whose double backward does not run under ``vmap`` (batch norm on the
    batch's statistics: torch's rule reads ``.data``) sets ``loss_fn.reverse_hvp = False``
    and gets :func:`hvp` for every product.
    """
    if not getattr(loss_fn, "reverse_hvp", True):
        return lambda v: hvp(loss_fn, fast, slow, batch, v)

    def fast_grad(fast: Params, slow: Params) -> Params:
        return torch.func.grad(lambda f: loss_fn({**slow, **f}, batch))(fast)

    _, pullback = torch.func.vjp(fast_grad, fast, slow)

    def product(v: Params) -> Params:
        on_fast, on_slow = pullback(v)
        return {**on_slow, **on_fast}

    return product


def safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, and 0 where ``den`` is 0 (a converged CG iteration); ``vmap``-safe."""
    tiny = torch.finfo(den.dtype).tiny
    ok = den.abs() > tiny
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))
