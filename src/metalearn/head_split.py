"""A head-only inner loop over the body's features, computed once per task (exact, and fast).

When the inner loop adapts only the last linear layer (``algo.adapt: head``: ANIL, and the
collaborative-filtering models' user head), the body's output on a task's examples is the same
at every inner step. A model whose loss has the form

    L(params, (x, y)) = ell(head(z) + o, y),   (z, o) = body(params_body, x)

(``o`` an optional additive offset: the CF model's item bias) can therefore be meta-trained on a
smaller problem: its parameters are the head's plus the features ``z, o`` of the task's support
and query examples, taken as non-adapted ("slow") parameters. Every learner's meta-gradient
reaches a slow parameter ``s`` only through derivatives ``d/ds`` of support or query losses, and
``z, o`` depend on ``s`` alone, so the body's gradient is one vector-Jacobian product of the body
with the learner's gradient on ``z, o``: the chain rule, exactly (``tests/test_head_split.py``
checks it in float64 for every learner). The inner loop then costs a few operations on the head
instead of a forward and backward pass through the whole network per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metalearn.functional import Params

FEATURES, OFFSET = "@features", "@offset"  # the reduced problem's slow keys (no model uses "@")


@dataclass(frozen=True)
class HeadSplit:
    """How a model's loss factors: ``body(params, x) -> (z, o or None)``, the ``head_keys`` of
    its last linear layer (``head.weight``, ``head.bias``) and ``ell(prediction, y)``; ``squeeze``
    drops the head's trailing output dimension (regression)."""

    head_keys: tuple[str, ...]
    body: Callable[[Params, Tensor], tuple[Tensor, Tensor | None]]
    ell: Callable[[Tensor, Tensor], Tensor]
    squeeze: bool

    def head_loss(self, params: Params, batch: tuple[Tensor, Tensor]) -> Tensor:
        """The loss of the reduced problem: ``batch = (index, y)`` picks the task's examples
        from the stacked features in ``params``."""
        index, y = batch
        out = torch.nn.functional.linear(
            params[FEATURES][index], params["head.weight"], params.get("head.bias")
        )
        if OFFSET in params:
            out = out + params[OFFSET][index]
        return self.ell(out.squeeze(-1) if self.squeeze else out, y)


def split_of(loss_fn: Any, adapted: Sequence[str]) -> HeadSplit | None:
    """``loss_fn``'s :class:`HeadSplit` if it has one and every adapted key is in its head."""
    split = getattr(loss_fn, "head_split", None)
    if split is None or not set(adapted) <= set(split.head_keys):
        return None
    return split


class HeadProblem:
    """One task's reduced problem: ``params`` (the head's and the stacked features), ``batches``
    (``(index, y)`` for each given ``(x, y)`` batch, in order) and :meth:`full_grad` (only when
    built ``differentiable``)."""

    def __init__(
        self,
        split: HeadSplit,
        params: Params,
        batches: Sequence[tuple[Tensor, Tensor]],
        differentiable: bool = True,
    ) -> None:
        self.split = split
        body = {k: v for k, v in params.items() if k not in split.head_keys}
        self._keys = list(params)

        def features(body_params: Params) -> Params:
            outs = [split.body(body_params, x) for x, _ in batches]
            stacked = {FEATURES: torch.cat([z for z, _ in outs])}
            if outs[0][1] is not None:
                stacked[OFFSET] = torch.cat([o for _, o in outs])
            return stacked

        if differentiable:  # keep the body's vector-Jacobian product for full_grad
            stacked, self._body_vjp = torch.func.vjp(features, body)
        else:
            stacked = features(body)
        self.params = {**{k: params[k] for k in split.head_keys}, **stacked}
        self.batches, start = [], 0
        for x, y in batches:
            n = x.shape[0]
            self.batches.append((torch.arange(start, start + n, device=y.device), y))
            start += n

    def loss(self, params: Params, batch: tuple[Tensor, Tensor]) -> Tensor:
        return self.split.head_loss(params, batch)

    def full_grad(self, grads: Params) -> Params:
        """The gradient on the model's parameters from one on the reduced problem's."""
        stacked = {k: grads[k] for k in (FEATURES, OFFSET) if k in grads}
        (body_grad,) = self._body_vjp(stacked)
        return {k: grads[k] if k in self.split.head_keys else body_grad[k] for k in self._keys}
