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
from torch import Tensor, nn

from metalearn.algorithms.base import Fit, Fitted, Option, Scorer
from metalearn.functional import LossFn, Params
from metalearn.models import BiasModel
from metalearn.values import Grid

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


class Bias(Fitted):
    """Adapts only ``head.bias`` (the user offset), in closed form: for a model whose output is
    ``g(x) + head.bias`` and the mean squared error, ``grad_b L_s = -(2/n) sum_j r_j`` with the
    residuals ``r_j = y_j - f(x_j)``, so

        b <- b + sum_j r_j / (n + lam_user) = b - n / (2 (n + lam_user)) * grad_b L_s,

    the shrunk mean residual (``steps`` and ``inner_lr`` are not used). ``item_shrinkage`` and
    ``user_shrinkage`` are the candidate grids the train stage chooses from on meta-val; adapting
    needs a single ``user_shrinkage`` (the chosen one)."""

    name = "bias"
    options = {
        "item_shrinkage": Option((5.0,), Grid, "lambda_item candidates, chosen on meta-val"),
        "user_shrinkage": Option((10.0,), Grid, "lambda_user candidates, chosen on meta-val"),
    }
    architectures = ("ratings",)  # item ids and ratings: collaborative filtering only
    ignores = ("steps", "inner_lr")  # its closed-form fit uses the shrinkages only
    seeded = False

    def __init__(
        self,
        steps: int = 1,
        inner_lr: float = 1.0,
        adapt_keys: Iterable[str] | None = None,
        **options: Sequence[float],
    ) -> None:
        super().__init__(steps, inner_lr, [USER_KEY], **options)  # the user offset, always

    @classmethod
    def model(cls, source: Any) -> nn.Module:
        return BiasModel(source.n_items, source.mean_rating)

    def fit(self, source: Any, score: Scorer, higher_is_better: bool) -> Fit:
        """The closed-form fit for every pair of candidate shrinkages, scored on meta-val; the
        best pair wins (the first on a tie)."""
        items, ratings = source.train_ratings()
        grid, best = [], None
        sign = 1.0 if higher_is_better else -1.0
        for item_lam in self.item_shrinkage:
            params = fit_item_offsets(items, ratings, source.n_items, item_lam)
            for user_lam in self.user_shrinkage:
                value = score(self.with_shrinkage(item_lam, user_lam), params)
                grid.append({"item_shrinkage": item_lam, "user_shrinkage": user_lam})
                grid[-1]["meta_val"] = value
                if best is None or sign * value > sign * best[0]:
                    best = (value, item_lam, user_lam, params)
        value, item_lam, user_lam, params = best
        chosen = {"item_shrinkage": item_lam, "user_shrinkage": user_lam}
        options = {key: [lam] for key, lam in chosen.items()}
        return Fit(params, options, chosen, grid, value)

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
