"""The classical collaborative-filtering baseline: global mean, item offsets and a user offset.

    r_hat(u, i) = mu + b_i + b_u

``mu`` is the mean meta-train rating; the item offsets are shrunk means of the meta-train
residuals, ``b_i = sum_{r in R_i} (r - mu) / (|R_i| + lam_item)`` (Koren 2008, "Factorization meets
the neighborhood", sec. 2.1); a task's user offset is the same estimate from its support ratings,
``b_u = sum_j (y_j - mu - b_{i_j}) / (n + lam_user)``. Nothing is meta-learned by gradient: the
fit is closed-form, and the two shrinkages are chosen on meta-val (:func:`fit_item_offsets` per
candidate, :class:`Bias` per candidate). It is the floor a CF meta-learner must clear: any model
that adapts to a user from a few ratings can represent it, and it needs no network.

The parameters are those of :class:`metalearn.models.BiasModel`: ``item.bias.weight``
``[n_items, 1]`` (the offsets) and ``head.bias`` ``[1]`` (``mu``; the user offset is added to it
in :meth:`Bias.adapt_fast`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from metalearn.algorithms.base import MetaLearner
from metalearn.functional import LossFn, Params

USER_KEY = "head.bias"


def fit_item_offsets(items: Tensor, ratings: Tensor, n_items: int, shrinkage: float) -> Params:
    """``BiasModel`` parameters from the meta-train ``ratings`` of ``items``: ``head.bias = mu``
    and ``item.bias.weight[i] = sum (r - mu) / (count_i + shrinkage)`` (0 for an unrated item)."""
    ratings = ratings.double()
    mu = ratings.mean()
    counts = torch.bincount(items, minlength=n_items).double()
    sums = torch.bincount(items, weights=ratings - mu, minlength=n_items)
    denom = counts + shrinkage
    offsets = torch.where(denom > 0, sums / denom.clamp_min(1e-12), torch.zeros_like(sums))
    return {"item.bias.weight": offsets[:, None].float(), USER_KEY: mu.reshape(1).float()}


def _grid(name: str, values: Iterable[float]) -> tuple[float, ...]:
    grid = tuple(float(v) for v in values)
    if not grid or any(not v >= 0 for v in grid):
        raise ValueError(f"{name}={list(grid)!r} is invalid: give one or more numbers >= 0")
    return grid


class Bias(MetaLearner):
    """Adapts only ``head.bias`` (the user offset), in closed form: for a model whose output is
    ``g(x) + head.bias`` and the mean squared error, ``grad_b L_s = -(2/n) sum_j r_j`` with the
    residuals ``r_j = y_j - f(x_j)``, so

        b <- b + sum_j r_j / (n + lam_user) = b - n / (2 (n + lam_user)) * grad_b L_s,

    the shrunk mean residual (``steps`` and ``inner_lr`` are not used). ``item_shrinkage`` and
    ``user_shrinkage`` are the candidate grids the train stage chooses from on meta-val; adapting
    needs a single ``user_shrinkage`` (the chosen one)."""

    name = "bias"
    options = ("item_shrinkage", "user_shrinkage")
    meta_trained = False
    seeded = False

    def __init__(
        self,
        steps: int = 1,
        inner_lr: float = 1.0,
        adapt_keys: Iterable[str] | None = None,
        item_shrinkage: Sequence[float] = (5.0,),
        user_shrinkage: Sequence[float] = (10.0,),
    ) -> None:
        super().__init__(steps, inner_lr, [USER_KEY])  # the user offset, whatever algo.adapt says
        self.item_shrinkage = _grid("item_shrinkage", item_shrinkage)
        self.user_shrinkage = _grid("user_shrinkage", user_shrinkage)

    def with_shrinkage(self, item: float, user: float) -> Bias:
        """The same learner with one chosen pair of shrinkages."""
        return Bias(self.steps, self.inner_lr, item_shrinkage=[item], user_shrinkage=[user])

    def adapt_fast(self, loss_fn: LossFn, fast: Params, slow: Params, support: Any) -> Params:
        if len(self.user_shrinkage) != 1:
            raise ValueError(
                f"bias: user_shrinkage {list(self.user_shrinkage)} is a grid; the train stage "
                "chooses one value on meta-val (re-run train@bias-<benchmark>)"
            )
        _, y = support
        n = y.shape[-1]
        grad = torch.func.grad(lambda f: loss_fn({**slow, **f}, support))(fast)[USER_KEY]
        return {USER_KEY: fast[USER_KEY] - n / (2 * (n + self.user_shrinkage[0])) * grad}

    def task_meta_grad(
        self, loss_fn: LossFn, params: Params, support: Any, query: Any
    ) -> tuple[Params, Tensor]:
        adapted = self.adapt(loss_fn, params, support)
        return {k: torch.zeros_like(v) for k, v in params.items()}, loss_fn(adapted, query)
