"""Implicit MAML (Rajeswaran et al. 2019): the meta-gradient from the optimality condition of a
proximally regularised inner problem, solved by conjugate gradient on Hessian-vector products."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from metalearn import functional as F
from metalearn.algorithms.base import MetaLearner, Option
from metalearn.functional import LossFn, Params
from metalearn.values import AtLeast1, Positive


def conjugate_gradient(matvec: Callable[[Params], Params], b: Params, iterations: int) -> Params:
    """``iterations`` steps of CG on ``A x = b`` from ``x = 0`` for a symmetric positive
    definite ``A`` given by ``matvec``. No data-dependent branches, so it runs under ``vmap``."""
    x = F.zeros_like(b)
    r = b
    p = r
    rr = F.dot(r, r)
    for _ in range(iterations):
        ap = matvec(p)
        step = F.safe_div(rr, F.dot(p, ap))
        x = F.axpy(step, p, x)
        r = F.axpy(-step, ap, r)
        rr_next = F.dot(r, r)
        p = F.axpy(F.safe_div(rr_next, rr), p, r)
        rr = rr_next
    return x


class IMAML(MetaLearner):
    """Inner problem ``phi*(theta) = argmin_phi L_s(phi) + lam/2 ||phi - theta||^2``,
    approximated by K gradient steps from theta. Meta-gradient on the adapted parameters

        g = (I + H_s(phi) / lam)^{-1} grad L_q(phi),

    from ``cg_steps`` CG iterations. On non-adapted (slow) parameters ``s`` the implicit function
    theorem gives ``dL_q/ds - (1/lam) d/ds <grad_phi L_s(phi, s), g>``.
    """

    name = "imaml"
    options = {
        "lam": Option(2.0, Positive, "proximal regularisation lambda (iMAML paper: 2.0)"),
        "cg_steps": Option(5, AtLeast1, "conjugate-gradient iterations (iMAML paper: 5)"),
    }

    def adapt_fast(self, loss_fn: LossFn, fast: Params, slow: Params, support: Any) -> Params:
        """K steps of gradient descent on ``L_s(phi) + lam/2 ||phi - theta||^2`` from theta."""
        theta = fast
        grad_support = F.grad_fast(loss_fn, slow, support)
        for _ in range(self.steps):
            g = grad_support(fast)
            step = {k: g[k] + self.lam * (fast[k] - theta[k]) for k in g}
            fast = F.axpy(-self.inner_lr, step, fast)
        return fast

    def task_meta_grad(
        self, loss_fn: LossFn, params: Params, support: Any, query: Any
    ) -> tuple[Params, Tensor]:
        with torch.no_grad():
            fast, slow = self.split(params)
            phi = self.adapt_fast(loss_fn, fast, slow, support)
            query_grad, loss = torch.func.grad_and_value(lambda p: loss_fn(p, query))(
                F.merge(params, phi)
            )

            hessian = F.hvp_at(loss_fn, phi, slow, support)  # linearised once at phi

            def matvec(v: Params) -> Params:  # (I + H/lam) v on the fast keys
                hv = hessian(v)
                return {k: v[k] + hv[k] / self.lam for k in v}

            g = conjugate_gradient(matvec, {k: query_grad[k] for k in phi}, self.cg_steps)
            grads = dict(g)
            if slow:  # the mixed term for the parameters held at theta
                mixed = hessian(g)
                grads.update({k: query_grad[k] - mixed[k] / self.lam for k in slow})
            return {k: grads[k] for k in params}, loss
