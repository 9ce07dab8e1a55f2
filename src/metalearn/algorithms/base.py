"""The interface every meta-learner implements, and what they share: the inner loop and batching.

Notation (all learners): ``u_0 = theta``, ``u_{j+1} = u_j - alpha * grad L_s(u_j)`` for
``j < K``, with ``L_s`` the loss on a task's support set and ``L_q`` on its query set. Only the
*adapted* parameters move in the inner loop (all of them by default; ``adapt_keys`` picks a subset,
e.g. ANIL's head); the others stay at theta but still get meta-gradients where the method defines
them.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from pydantic import TypeAdapter, ValidationError
from torch import Tensor, nn

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


OWN = "/"  # in the names of a learner's own parameters; in no module's parameter name


def split_own(params: Params) -> tuple[Params, Params]:
    """``(model, own)``: the model's parameters, and the learner's own (Meta-SGD's step sizes:
    names with a ``/``), which the Adam step, the checkpoint and the all-reduce carry alike."""
    own = {k: v for k, v in params.items() if OWN in k}
    return {k: v for k, v in params.items() if OWN not in k}, own


@dataclasses.dataclass(frozen=True)
class Option:
    """One of a learner's own options: the keyword its class takes and the key
    ``algo.<learner>.<name>`` of params.yaml (a learner's section may leave it out: ``default``).
    ``kind`` says what it allows, bounds included (a type of :mod:`metalearn.values`, or
    ``Literal[...]``); ``doc`` says what it is."""

    default: Any
    kind: Any
    doc: str = ""

    def check(self, name: str, value: Any) -> Any:
        """``value`` as the option allows it; a ValueError naming the option otherwise."""
        try:
            return TypeAdapter(self.kind).validate_python(value)
        except ValidationError as error:
            why = error.errors()[0]["msg"].removeprefix("Value error, ")
            raise ValueError(f"{name}={value!r} is invalid: {why}") from None


class MetaLearner(ABC):
    """A meta-learner: ``adapt`` to a task's support set, and ``meta_grad`` for the outer loop.

    Subclasses implement :meth:`task_meta_grad`; batching over a meta-batch is shared. A subclass
    with a ``name`` is a learner of the pipeline: its file under ``algorithms/`` is all it takes
    (:mod:`metalearn.algorithms` finds it; params.yaml's ``algo.<name>`` holds its options).
    """

    name: ClassVar[str]
    #: Options a subclass accepts beyond ``steps``, ``inner_lr`` and ``adapt_keys``.
    options: ClassVar[Mapping[str, Option]] = {}
    #: A baseline a practitioner would try first, not a meta-learner (the report compares each
    #: meta-learner with the baselines).
    baseline: ClassVar[bool] = False
    #: The benchmarks' architectures the learner applies to (None: every one): a learner for
    #: ``("ratings",)`` runs on the collaborative-filtering benchmarks only.
    architectures: ClassVar[tuple[str, ...] | None] = None
    #: The shared keys (``steps``, ``inner_lr``) the learner does not use: its spec leaves them
    #: out, so changing them re-runs nothing of it.
    ignores: ClassVar[tuple[str, ...]] = ()
    #: False for a baseline whose ``theta`` is not learned (meta-training is skipped).
    meta_trained: ClassVar[bool] = True
    #: False for a learner whose fit draws nothing at random: one training seed is all of them.
    seeded: ClassVar[bool] = True
    #: False for a learner whose meta-gradient evaluates support and query examples in one batch
    #: (pretrain): with batch norm its features differ from the per-batch ones of the head split.
    meta_grad_on_head_split: ClassVar[bool] = True
    #: True for a learner whose meta-gradient backpropagates through the stored inner loop
    #: (memory O(K) by design): the efficiency study's flat-memory target is not its.
    unrolled: ClassVar[bool] = False

    def __init__(
        self,
        steps: int,
        inner_lr: float,
        adapt_keys: Iterable[str] | None = None,
        **options: Any,
    ) -> None:
        self.steps = check_int("steps", steps)
        self.iteration = 0  # of meta-training (set_iteration); 0 outside it
        self.inner_lr = check_positive("inner_lr", inner_lr)
        if isinstance(adapt_keys, str):
            adapt_keys = [adapt_keys]
        self.adapt_keys = None if adapt_keys is None else tuple(adapt_keys)
        for key, value in options.items():
            if key not in self.options:
                raise ValueError(
                    f"unknown option {key}={value!r} for learner {self.name!r}; its options: "
                    f"{', '.join(['steps', 'inner_lr', 'adapt_keys', *self.options])}"
                )
        for key, option in self.options.items():
            setattr(self, key, option.check(key, options.get(key, option.default)))

    def set_iteration(self, iteration: int) -> None:
        """The training loop calls this before each meta-gradient (from 1): a learner whose
        meta-gradient changes over meta-training (MAML++'s loss weights and derivative order)
        reads ``self.iteration``. Adaptation never depends on it."""
        self.iteration = iteration

    def meta_params(self, params: Params) -> Params:
        """What meta-training learns, from the model's initial ``params``: those, and any
        parameters of the learner's own (none here; Meta-SGD adds its step sizes), named with a
        ``/`` (:func:`split_own`)."""
        return params

    @classmethod
    def model(cls, source: Any) -> nn.Module | None:
        """The model this learner brings for ``source`` (a benchmark's task source), or None
        for the benchmark's own (``model`` in params.yaml)."""
        return None

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
        """:meth:`task_meta_grad`, on the head split where it applies (the same numbers). The
        learner's own parameters (:func:`own_keys`) pass through the reduced problem as they
        are: they are the head's step sizes, which it keeps."""
        model, own = split_own(params)
        problem = None
        if self.meta_grad_on_head_split:
            problem = self._head_problem(loss_fn, model, [support, query])
        if problem is None:
            return self.task_meta_grad(loss_fn, params, support, query)
        grads, loss = self.task_meta_grad(problem.loss, {**problem.params, **own}, *problem.batches)
        model_grads, own_grads = split_own(grads)
        return {**problem.full_grad(model_grads), **own_grads}, loss

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


@dataclasses.dataclass
class Fit:
    """What a fitted baseline chose: its parameters, its options (to rebuild it for meta-test),
    their values as numbers (the curve and the MLflow run show them), every candidate with its
    meta-val score (``meta_val``), and the chosen one's score."""

    params: Params
    options: dict[str, Any]
    chosen: dict[str, float]
    grid: list[dict[str, float]]
    value: float


#: ``score(learner, params)``: the mean meta-val score of ``learner`` adapting from ``params``.
Scorer = Callable[["MetaLearner", Params], float]


class Fitted(MetaLearner):
    """A baseline fitted on the meta-train data (in closed form, choosing its options on
    meta-val) instead of meta-trained: the training loop calls :meth:`fit` once, and meta-test
    adapts from the parameters it returns, with the options it chose."""

    meta_trained = False
    baseline = True

    @abstractmethod
    def fit(self, source: Any, score: Scorer, higher_is_better: bool) -> Fit:
        """Fit on ``source`` (a benchmark's task source); ``score`` rates a candidate."""


def _leading_dim(tree: Any) -> int:
    leaves = torch.utils._pytree.tree_leaves(tree)
    if not leaves:
        raise ValueError("a meta-batch needs at least one tensor with a leading task dimension")
    return leaves[0].shape[0]


def _index(tree: Any, i: int) -> Any:
    return torch.utils._pytree.tree_map(lambda t: t[i], tree)
