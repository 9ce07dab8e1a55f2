"""Meta-SGD (Li et al. 2017): MAML whose inner step size is meta-learned, one per parameter entry.

The inner loop is ``u_{j+1} = u_j - alpha * grad L_s(u_j)`` with ``alpha`` a tensor of the shape
of each adapted parameter (elementwise product), and the meta-gradient is taken with respect to
``theta`` and ``alpha`` together, through all K steps:

    g_theta = d L_q(u_K) / d theta,   g_alpha = d L_q(u_K) / d alpha
            = - sum_j grad L_s(u_j) * (d L_q(u_K) / d u_{j+1})

(the paper takes K = 1). ``alpha`` lives in the parameter dict beside the model's, under
``inner_lr/<key>``, so the outer Adam step, the checkpoint and the data-parallel all-reduce carry
it like any parameter; :meth:`MetaSGD.meta_params` adds it, at ``inner_lr``. A key without its
``alpha`` entry adapts with the constant ``inner_lr`` (and gets no step-size gradient).

``step_sizes``: ``signed`` (the paper's) learns ``alpha`` itself, so a step size may change sign;
``positive`` learns ``log alpha``. Over many inner steps a negative entry ascends the support loss
and grows like ``(1 + |alpha| lambda)^K``, and Adam moves every entry by about ``meta_lr`` an
outer step whatever its scale (a step size of 0.01 changes sign within a few steps at
``meta_lr`` 0.003). In log space each step size stays positive and Adam moves it by a fraction
of itself; the meta-gradient is the signed one times ``alpha`` (the chain rule).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from metalearn import functional as F
from metalearn.algorithms.base import MetaLearner, Option
from metalearn.functional import LossFn, Params

PREFIX = "inner_lr/"  # "/" is in no module's parameter name
STEP_SIZES = ("signed", "positive")


class MetaSGD(MetaLearner):
    """``g = d L_q(u_K(theta, alpha)) / d (theta, alpha)`` by reverse-mode autodiff through the
    unrolled loop, as MAML; memory O(K)."""

    name = "metasgd"
    unrolled = True
    options = {
        "step_sizes": Option(
            "signed", Literal[STEP_SIZES], "signed (the paper's: alpha) | positive (log alpha)"
        ),
    }

    def meta_params(self, params: Params) -> Params:
        fast, _ = self.split(params)
        start = math.log(self.inner_lr) if self.step_sizes == "positive" else self.inner_lr
        return {**params, **{PREFIX + k: torch.full_like(v, start) for k, v in fast.items()}}

    def _unpack(self, params: Params) -> tuple[Params, Params]:
        """``(theta, learned)``: the model's parameters, and the learned step-size entries by
        the model's keys (``alpha`` or ``log alpha``: :meth:`_alpha`)."""
        theta = {k: v for k, v in params.items() if not k.startswith(PREFIX)}
        learned = {k.removeprefix(PREFIX): v for k, v in params.items() if k.startswith(PREFIX)}
        return theta, learned

    def _alpha(self, learned: Params) -> Params:
        if self.step_sizes == "positive":
            return {k: torch.exp(v) for k, v in learned.items()}
        return learned

    def _adapt(self, loss_fn: LossFn, fast: Params, slow: Params, alpha: Params, support: Any):
        for _ in range(self.steps):
            grads = F.grad_fast(loss_fn, slow, support)(fast)
            fast = {k: fast[k] - alpha.get(k, self.inner_lr) * grads[k] for k in fast}
        return fast

    def adapt(self, loss_fn: LossFn, params: Params, support: Any) -> Params:
        theta, learned = self._unpack(F.detach(params))
        alpha = self._alpha(learned)
        with torch.no_grad():
            problem = self._head_problem(loss_fn, theta, [support], differentiable=False)
            if problem is not None:
                fast, slow = self.split(problem.params)
                adapted = self._adapt(problem.loss, fast, slow, alpha, *problem.batches)
                return F.merge(theta, adapted)
            fast, slow = self.split(theta)
            return F.merge(theta, self._adapt(loss_fn, fast, slow, alpha, support))

    def task_meta_grad(
        self, loss_fn: LossFn, params: Params, support: Any, query: Any
    ) -> tuple[Params, Tensor]:
        theta, learned = self._unpack(params)

        def meta_loss(theta: Params, learned: Params) -> Tensor:
            fast, slow = self.split(theta)
            adapted = self._adapt(loss_fn, fast, slow, self._alpha(learned), support)
            return loss_fn(F.merge(theta, adapted), query)

        with torch.no_grad():  # the graph lives only inside torch.func.grad
            (g_theta, g_learned), loss = torch.func.grad_and_value(meta_loss, argnums=(0, 1))(
                theta, learned
            )
        return {**g_theta, **{PREFIX + k: g for k, g in g_learned.items()}}, loss
