"""MAML++ (Antoniou, Edwards & Storkey, ICLR 2019, "How to train your MAML"): MAML with the
stability tricks of the MAML lecture ("Training Instability"), each an option of its own.

- ``multi_step_loss``: the meta-loss is ``sum_j w_j(t) L_q(u_j)`` over the inner steps
  ``j = 1..K``, ``t`` the meta-iterations done. At ``t = 0`` the weights are uniform (``1/K``);
  over ``msl_iterations`` iterations each non-final weight falls linearly to ``0.03/K`` and the
  final one rises to ``1 - (K-1) 0.03/K``; after that the meta-loss is ``L_q(u_K)`` alone (MAML++'s
  schedule, with iterations for its epochs).
- ``first_order_until``: up to meta-iteration N the inner gradients are held constant in the
  meta-gradient (FOMAML's approximation); after N, the exact gradient through the loop (0: never
  first-order).
- ``per_step_lr``: a meta-learned step size per inner step and per parameter tensor (LSLR):
  ``u_{j+1}[k] = u_j[k] - alpha_{j,k} grad_k L_s(u_j)``, all starting at ``inner_lr``.
- ``per_step_bn``: batch-norm scale and shift per inner step (BNWB): the model at ``u_j``
  normalises with set ``j`` (``j = 0..K``; set 0 is the model's own, the others start as its
  copies), meta-learned and not adapted. Applies to the layers named ``norm`` (Conv4's); a model
  without them is unaffected. The statistics are always the batch's own (the Conv4 keeps no
  running statistics), so per-step statistics reduce to the per-step scale and shift.

The learned step sizes and batch-norm sets live in the parameter dict beside the model's, under
``inner_lr/<j>/<key>`` and ``bn/<j>/<key>``, so Adam, the checkpoint and the data-parallel
all-reduce carry them like any parameter. With every option off this is MAML.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metalearn import functional as F
from metalearn.algorithms.base import MetaLearner, Option, split_own
from metalearn.functional import LossFn, Params
from metalearn.head_split import HeadProblem
from metalearn.values import AtLeast1, Bool, NonNegative

LR = "inner_lr/"  # the learner's own parameters (a "/" in the name: base.split_own)
BN = "bn/"
NORM = ".norm."  # the batch-norm layers' part of a parameter name (models.Conv4)
MIN_WEIGHT = 0.03  # MAML++'s floor of a non-final step's loss weight, times K


class MAMLPlusPlus(MetaLearner):
    """MAML through the unrolled loop (memory O(K)), with MAML++'s options."""

    name = "mamlpp"
    unrolled = True
    options = {
        "multi_step_loss": Option(True, Bool, "the query loss after every inner step, weighted"),
        "msl_iterations": Option(500, AtLeast1, "iterations over which the weights anneal"),
        "first_order_until": Option(0, NonNegative, "first-order meta-gradients up to here"),
        "per_step_lr": Option(True, Bool, "a learned step size per inner step and tensor"),
        "per_step_bn": Option(True, Bool, "batch-norm scale and shift per inner step"),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._weights = torch.empty(self.steps, dtype=torch.float64)
        self.set_iteration(0)  # the schedule's state: set_iteration below

    # -- the learner's own parameters --------------------------------------------------------

    def meta_params(self, params: Params) -> Params:
        theta = dict(params)
        fast, _ = self._split(theta)
        if self.per_step_lr:
            for j in range(self.steps):
                theta |= {f"{LR}{j}/{k}": v.new_full((), self.inner_lr) for k, v in fast.items()}
        if self.per_step_bn:
            for j in range(1, self.steps + 1):
                theta |= {f"{BN}{j}/{k}": v.clone() for k, v in params.items() if NORM in k}
        return theta

    def _split(self, theta: Params) -> tuple[Params, Params]:
        """``(fast, slow)``; with per-step batch norm its scales and shifts are never adapted."""
        keys = F.adapted_keys(theta, self.adapt_keys)
        if self.per_step_bn:
            keys = [k for k in keys if NORM not in k]
        return F.split(theta, keys)

    def _norms(self, slow: Params, extra: Params, j: int) -> Params:
        """The held parameters as the model at ``u_j`` uses them: batch-norm set ``j``, or the
        last one learned for a step beyond (meta-test with more steps than training)."""
        last = _last_step(extra, BN)
        if not self.per_step_bn or j == 0 or last is None:
            return slow
        return {**slow, **{k: extra[f"{BN}{min(j, last)}/{k}"] for k in slow if NORM in k}}

    def _step_size(self, extra: Params, j: int, key: str) -> float | Tensor:
        """Step ``j``'s size for ``key``: its learned one (the last learned beyond them), else
        ``inner_lr``."""
        last = _last_step(extra, LR)
        if last is None:
            return self.inner_lr
        return extra.get(f"{LR}{min(j, last)}/{key}", self.inner_lr)

    # -- the schedule over meta-training -----------------------------------------------------

    def set_iteration(self, iteration: int) -> None:
        """The loss weights and the derivative order for meta-iteration ``iteration``. The
        meta-gradient reads them as a tensor updated in place and two flags, never the
        iteration itself: a compiled meta-gradient is compiled again when a flag flips (twice
        at most), not at every iteration."""
        super().set_iteration(iteration)
        self._weights.copy_(torch.tensor(self.step_weights(), dtype=torch.float64))
        self._all_steps = self.multi_step_loss and self._done() < self.msl_iterations
        self._first_order = 0 < iteration <= self.first_order_until

    def _done(self) -> int:
        """Meta-iterations completed before this one (MAML++'s epoch counter)."""
        return max(self.iteration - 1, 0)

    def step_weights(self) -> list[float]:
        """The query losses' weights ``w_1..w_K`` at meta-iteration ``self.iteration``:
        uniform at the first, annealed over ``msl_iterations``, then the final step's alone."""
        k, t = self.steps, self._done()
        if not self.multi_step_loss or t >= self.msl_iterations:
            return [0.0] * (k - 1) + [1.0]
        decay, floor = 1.0 / k / self.msl_iterations, MIN_WEIGHT / k
        early = [max(1.0 / k - t * decay, floor)] * (k - 1)
        return [*early, min(1.0 / k + t * (k - 1) * decay, 1.0 - (k - 1) * floor)]

    # -- the inner loop and the meta-gradient ------------------------------------------------

    def _unroll(
        self, loss_fn: LossFn, fast: Params, slow: Params, extra: Params, support: Any,
        first_order: bool,
    ) -> list[Params]:  # fmt: skip
        """``[u_1, ..., u_K]`` of the fast parameters."""
        path = []
        for j in range(self.steps):
            grads = F.grad_fast(loss_fn, self._norms(slow, extra, j), support)(fast)
            if first_order:
                grads = F.detach(grads)
            fast = {k: fast[k] - self._step_size(extra, j, k) * grads[k] for k in fast}
            path.append(fast)
        return path

    def adapt(self, loss_fn: LossFn, params: Params, support: Any) -> Params:
        """``u_K``, with the batch-norm set of step K in place of the model's own."""
        theta, extra = split_own(F.detach(params))
        with torch.no_grad():
            problem = self._head_problem(loss_fn, theta, [support], differentiable=False)
            if problem is not None:  # the body's features once, then the head alone
                fast, slow = self._split(problem.params)
                path = self._unroll(problem.loss, fast, slow, extra, *problem.batches, True)
                return F.merge(theta, path[-1])
            fast, slow = self._split(theta)
            path = self._unroll(loss_fn, fast, slow, extra, support, first_order=True)
            return {**theta, **self._norms(slow, extra, self.steps), **path[-1]}

    def task_meta_grad(
        self, loss_fn: LossFn, params: Params, support: Any, query: Any
    ) -> tuple[Params, Tensor]:
        def meta_loss(params: Params) -> tuple[Tensor, Tensor]:
            theta, extra = split_own(params)
            fast, slow = self._split(theta)
            path = self._unroll(loss_fn, fast, slow, extra, support, self._first_order)
            final = loss_fn({**self._norms(slow, extra, self.steps), **path[-1]}, query)
            if not self._all_steps:
                return final, final
            losses = [
                loss_fn({**self._norms(slow, extra, j + 1), **u}, query)
                for j, u in enumerate(path[:-1])
            ]
            weights = self._weights.to(final)
            return weights @ torch.stack([*losses, final]), final

        with torch.no_grad():  # the graph lives only inside torch.func.grad
            grads, (_, loss) = torch.func.grad_and_value(meta_loss, has_aux=True)(params)
        return grads, loss

    def _head_problem(
        self, loss_fn: LossFn, params: Params, batches: list[Any], differentiable: bool = True
    ) -> HeadProblem | None:
        """The head split's problem, unless per-step batch-norm sets change the body's features
        from one inner step to the next."""
        if self.per_step_bn and any(NORM in k for k in params):
            return None
        return super()._head_problem(loss_fn, params, batches, differentiable)


def _last_step(extra: Params, prefix: str) -> int | None:
    """The highest step index among ``extra``'s ``<prefix><j>/<key>`` entries, None if none."""
    steps = [int(k[len(prefix) :].split("/", 1)[0]) for k in extra if k.startswith(prefix)]
    return max(steps, default=None)
