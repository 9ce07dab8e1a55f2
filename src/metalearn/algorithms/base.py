"""The interface every meta-learner implements, and what they share: the inner loop and batching.

Notation (all learners): ``u_0 = theta``, ``u_{j+1} = u_j - alpha * grad L_s(u_j)`` for
``j < K``, with ``L_s`` the loss on a task's support set and ``L_q`` on its query set. Only the
*adapted* parameters move in the inner loop (all of them by default; ``adapt_keys`` picks a subset,
e.g. ANIL's head); the others stay at theta but still get meta-gradients where the method defines
them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from metalearn import functional as F
from metalearn.functional import LossFn, Params
from metalearn.head_split import HeadProblem, split_of


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid: it must be an integer >= {minimum}")
    return value


def check_positive(name: str, value: Any) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} is invalid: it must be a finite number > 0")
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is invalid: choose one of {', '.join(choices)}")
    return value


class MetaLearner(ABC):
    """A meta-learner: ``adapt`` to a task's support set, and ``meta_grad`` for the outer loop.

    Subclasses implement :meth:`task_meta_grad`; batching over a meta-batch is shared.
    """

    name: ClassVar[str]
    #: Options a subclass accepts beyond ``steps``, ``inner_lr`` and ``adapt_keys``.
    options: ClassVar[tuple[str, ...]] = ()
    #: False for a baseline whose ``theta`` is not learned (meta-training is skipped).
    meta_trained: ClassVar[bool] = True
    #: False for a learner whose fit draws nothing at random: one training seed is all of them.
    seeded: ClassVar[bool] = True
    #: False for a learner whose meta-gradient evaluates support and query examples in one batch
    #: (pretrain): with batch norm its features differ from the per-batch ones of the head split.
    meta_grad_on_head_split: ClassVar[bool] = True

    def __init__(
        self, steps: int, inner_lr: float, adapt_keys: Iterable[str] | None = None
    ) -> None:
        self.steps = check_int("steps", steps)
        self.inner_lr = check_positive("inner_lr", inner_lr)
        if isinstance(adapt_keys, str):
            adapt_keys = [adapt_keys]
        self.adapt_keys = None if adapt_keys is None else tuple(adapt_keys)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in self.options)
        return f"{type(self).__name__}(steps={self.steps}, inner_lr={self.inner_lr}{extra})"

    # -- the inner loop ------------------------------------------------------------------------

    def split(self, params: Params) -> tuple[Params, Params]:
        """``(fast, slow)``: adapted parameters and those held at theta."""
        return F.split(params, F.adapted_keys(params, self.adapt_keys))

    def inner_step(self, loss_fn: LossFn, fast: Params, slow: Params, batch: Any) -> Params:
        """One step of gradient descent on the support loss: ``u - alpha * grad L_s(u)``."""
        return F.axpy(-self.inner_lr, F.grad_fast(loss_fn, slow, batch)(fast), fast)

    def adapt_fast(self, loss_fn: LossFn, fast: Params, slow: Params, support: Any) -> Params:
        """``u_K`` of the fast parameters; differentiable when called under a ``torch.func``
        transform (MAML differentiates through it)."""
        for _ in range(self.steps):
            fast = self.inner_step(loss_fn, fast, slow, support)
        return fast

    def adapt(self, loss_fn: LossFn, params: Params, support: Any) -> Params:
        """Task-adapted parameters (all keys; the non-adapted ones equal ``params``), detached."""
        params = F.detach(params)
        with torch.no_grad():  # torch.func.grad ignores an outer no_grad: no graph is kept
            problem = self._head_problem(loss_fn, params, [support], differentiable=False)
            if problem is not None:  # the body's features once, then the head alone
                fast, slow = self.split(problem.params)
                return F.merge(params, self.adapt_fast(problem.loss, fast, slow, *problem.batches))
            fast, slow = self.split(params)
            return F.merge(params, self.adapt_fast(loss_fn, fast, slow, support))

    def _head_problem(
        self, loss_fn: LossFn, params: Params, batches: list[Any], differentiable: bool = True
    ) -> HeadProblem | None:
        """The task's problem on the head and the body's features (:mod:`metalearn.head_split`),
        where the loss factors and only head keys adapt; otherwise ``None``."""
        split = split_of(loss_fn, F.adapted_keys(params, self.adapt_keys))
        if split is None:
            return None
        return HeadProblem(split, params, batches, differentiable)

    def batched_adapt(
        self, loss_fn: LossFn, params: Params, support: Any, chunk_size: int | None = None
    ) -> Params:
        """:meth:`adapt` for a stack of tasks (leading task dim in ``support``), via ``vmap``."""
        adapt_one = lambda s: self.adapt(loss_fn, params, s)  # noqa: E731
        return torch.func.vmap(adapt_one, chunk_size=chunk_size)(support)

    # -- meta-gradients ------------------------------------------------------------------------

    @abstractmethod
    def task_meta_grad(
        self, loss_fn: LossFn, params: Params, support: Any, query: Any
    ) -> tuple[Params, Tensor]:
        """``(meta-gradient, L_q(u_K))`` for one task; no graph is attached to either."""

    def meta_grad_and_loss(
        self, loss_fn: LossFn, params: Params, support: Any, query: Any
    ) -> tuple[Params, Tensor]:
        """:meth:`task_meta_grad`, on the head split where it applies (the same numbers)."""
        problem = None
        if self.meta_grad_on_head_split:
            problem = self._head_problem(loss_fn, params, [support, query])
        if problem is None:
            return self.task_meta_grad(loss_fn, params, support, query)
        grads, loss = self.task_meta_grad(problem.loss, problem.params, *problem.batches)
        return problem.full_grad(grads), loss

    def meta_grad(self, loss_fn: LossFn, params: Params, support: Any, query: Any) -> Params:
        """The direction the outer optimizer descends, with the keys and shapes of ``params``."""
        return self.meta_grad_and_loss(loss_fn, F.detach(params), support, query)[0]

    def batched_meta_grad_and_loss(
        self,
        loss_fn: LossFn,
        params: Params,
        support: Any,
        query: Any,
        chunk_size: int | None = None,
    ) -> tuple[Params, Tensor]:
        """Mean meta-gradient and mean post-adaptation query loss over a meta-batch.

        ``support`` and ``query`` carry a leading task dimension; the tasks run in one
        ``torch.func.vmap`` (in chunks of ``chunk_size`` tasks to bound memory).
        """
        params = F.detach(params)
        per_task = torch.func.vmap(
            lambda s, q: self.meta_grad_and_loss(loss_fn, params, s, q), chunk_size=chunk_size
        )
        grads, losses = per_task(support, query)
        return {k: g.mean(0) for k, g in grads.items()}, losses.mean()

    def batched_meta_grad(
        self,
        loss_fn: LossFn,
        params: Params,
        support: Any,
        query: Any,
        chunk_size: int | None = None,
    ) -> Params:
        """Mean meta-gradient over a meta-batch (see :meth:`batched_meta_grad_and_loss`)."""
        return self.batched_meta_grad_and_loss(loss_fn, params, support, query, chunk_size)[0]

    def looped_meta_grad_and_loss(
        self, loss_fn: LossFn, params: Params, support: Any, query: Any
    ) -> tuple[Params, Tensor]:
        """The same mean as the batched form, one task at a time (the reference it is tested
        against, and the baseline of the speed benchmarks)."""
        params = F.detach(params)
        n_tasks = _leading_dim(support)
        total: Params | None = None
        loss_sum = torch.zeros(())
        for i in range(n_tasks):
            s, q = _index(support, i), _index(query, i)
            grads, loss = self.meta_grad_and_loss(loss_fn, params, s, q)
            total = grads if total is None else {k: total[k] + grads[k] for k in grads}
            loss_sum = loss_sum.to(loss) + loss
        assert total is not None
        return {k: v / n_tasks for k, v in total.items()}, loss_sum / n_tasks


def _leading_dim(tree: Any) -> int:
    leaves = torch.utils._pytree.tree_leaves(tree)
    if not leaves:
        raise ValueError("a meta-batch needs at least one tensor with a leading task dimension")
    return leaves[0].shape[0]


def _index(tree: Any, i: int) -> Any:
    return torch.utils._pytree.tree_map(lambda t: t[i], tree)
