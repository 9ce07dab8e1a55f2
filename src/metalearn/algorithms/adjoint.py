"""Adjoint MAML (Li et al.): the inner loop as an ODE, the meta-gradient from its adjoint ODE.

Forward (initial value problem): ``du/dt = -grad L_s(u)``, ``u(0) = theta``, solved by forward
Euler with step alpha for K steps (``T = K alpha``): exactly the MAML inner loop.

Backward (terminal value problem): ``lambda(T) = grad L_q(u(T))``, ``d lambda/dt = H_s(u) lambda``
with ``H_s = grad^2 L_s``, integrated from T back to 0; the meta-gradient is ``lambda(0)``.
Every step is a Hessian-vector product at a state of the trajectory, and no autograd graph
spans more than one step, so memory is set by how the states are kept (``trajectory``).

Parameters held at theta (``adapt_keys``) enter the dynamics as constants ``s``; their gradient
is ``dL_q/ds - int_0^T (d^2 L_s / ds du) lambda dt``, by the same quadrature as ``lambda``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import Tensor

from metalearn import functional as F
from metalearn.algorithms.base import MetaLearner, Option
from metalearn.functional import LossFn, Params
from metalearn.values import AtLeast1

SCHEMES = ("heun", "euler")
TRAJECTORIES = ("store", "checkpoint", "reverse")


class AdjointMAML(MetaLearner):
    """Adjoint MAML. Options:

    ``scheme``:
      * ``heun`` (the paper's): ``l~_j = l_{j+1} - a H(u_{j+1}) l_{j+1}``,
        ``l_j = l_{j+1} - a/2 [H(u_{j+1}) l_{j+1} + H(u_j) l~_j]`` (two HVPs a step);
      * ``euler``: ``l_j = l_{j+1} - a H(u_j) l_{j+1}``, the discrete adjoint of the forward
        Euler loop, equal to MAML's gradient up to round-off (one HVP a step).

    ``trajectory`` (how the backward pass gets the states ``u_j``):
      * ``store``: keep all K+1 states, O(K P) memory (the authors' released code);
      * ``checkpoint``: keep every ``checkpoint_every``-th state (default ``ceil(sqrt(K))``) and
        recompute each segment when the backward pass reaches it: O((K/c + c) P) memory, one
        extra forward pass, the same gradient as ``store``;
      * ``reverse``: rebuild ``u_j = u_{j+1} + a grad L_s(u_{j+1})`` by integrating the forward
        ODE backwards from ``u_K``: O(P) memory, but approximate (error O(a^2) a step; its size is
        measured in the tests and the efficiency benchmark).
    """

    name = "adjoint"
    options = {
        "scheme": Option("heun", Literal[SCHEMES], "heun (the paper's) | euler (equals MAML)"),
        "trajectory": Option(
            "checkpoint", Literal[TRAJECTORIES], "how the backward pass gets the states"
        ),
        "checkpoint_every": Option(
            None, AtLeast1 | None, "states between checkpoints; null = ceil(sqrt(K))"
        ),
    }

    def task_meta_grad(
        self, loss_fn: LossFn, params: Params, support: Any, query: Any
    ) -> tuple[Params, Tensor]:
        # torch.func transforms ignore an outer no_grad: each step still differentiates locally
        with torch.no_grad():
            fast, slow = self.split(params)
            states = self._backward_states(loss_fn, fast, slow, support)
            u_next = next(states)  # u_K
            query_grad, loss = torch.func.grad_and_value(lambda p: loss_fn(p, query))(
                F.merge(params, u_next)
            )
            lam = {k: query_grad[k] for k in fast}
            slow_grad = {k: query_grad[k] for k in slow}
            a = self.inner_lr
            # Heun takes two products at each state u_j (with l~_j, then with l_j one step
            # later): each state is linearised once, and kept until its second product.
            hessian_next = (
                F.hvp_at(loss_fn, u_next, slow, support) if self.scheme == "heun" else None
            )
            for u in states:  # u_j for j = K-1 .. 0, with u_next = u_{j+1}
                if self.scheme == "euler":
                    h = F.hvp(loss_fn, u, slow, support, lam)
                    lam, slow_grad = F.axpy(-a, h, lam), F.axpy(-a, h, slow_grad)
                else:
                    h_next = hessian_next(lam)
                    lam_tilde = F.axpy(-a, h_next, lam)
                    hessian_next = F.hvp_at(loss_fn, u, slow, support)
                    h = hessian_next(lam_tilde)
                    both = {k: h_next[k] + h[k] for k in h}
                    lam, slow_grad = F.axpy(-a / 2, both, lam), F.axpy(-a / 2, both, slow_grad)
                u_next = u
            return {**lam, **slow_grad}, loss

    # -- trajectories: yield u_K, u_{K-1}, ..., u_0 ------------------------------------------

    def _backward_states(
        self, loss_fn: LossFn, fast: Params, slow: Params, support: Any
    ) -> Iterator[Params]:
        if self.trajectory == "store":
            return reversed(self._forward(loss_fn, fast, slow, support, self.steps))
        if self.trajectory == "checkpoint":
            return self._checkpointed(loss_fn, fast, slow, support)
        return self._reversed(loss_fn, fast, slow, support)

    def _forward(
        self, loss_fn: LossFn, u: Params, slow: Params, support: Any, steps: int
    ) -> list[Params]:
        """``[u, u_1, ..., u_steps]`` by forward Euler."""
        states = [u]
        for _ in range(steps):
            states.append(self.inner_step(loss_fn, states[-1], slow, support))
        return states

    def interval(self) -> int:
        """States between checkpoints (``checkpoint_every`` or ``ceil(sqrt(K))``)."""
        return self.checkpoint_every or max(1, math.ceil(math.sqrt(self.steps)))

    def _checkpointed(
        self, loss_fn: LossFn, u: Params, slow: Params, support: Any
    ) -> Iterator[Params]:
        c = self.interval()
        starts = list(range(0, self.steps, c))
        checkpoints = [u]  # u at each segment start, then u_K
        for start in starts:
            segment = min(c, self.steps - start)
            for _ in range(segment):
                u = self.inner_step(loss_fn, u, slow, support)
            checkpoints.append(u)
        yield checkpoints[-1]
        for i in reversed(range(len(starts))):
            segment = min(c, self.steps - starts[i])
            # recompute u_start .. u_{end-1}; u_end is the checkpoint already yielded
            states = self._forward(loss_fn, checkpoints[i], slow, support, segment - 1)
            checkpoints[i + 1] = None  # free the checkpoint behind us
            yield from reversed(states)

    def _reversed(self, loss_fn: LossFn, u: Params, slow: Params, support: Any) -> Iterator[Params]:
        for _ in range(self.steps):
            u = self.inner_step(loss_fn, u, slow, support)
        yield u
        for _ in range(self.steps):
            u = F.axpy(self.inner_lr, F.grad_fast(loss_fn, slow, support)(u), u)
            yield u
