"""The efficiency stage's problems: a seeded meta-batch of tasks with the shapes of one of two
benchmarks, with its model, loss and meta-parameters (:func:`make_problem`), on which every
measurement of the stage takes its meta-gradients, each learner as meta-training's first
iteration runs it (:func:`first_iteration`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from metalearn.algorithms import make
from metalearn.algorithms.base import MetaLearner
from metalearn.config import EFFICIENCY_PROBLEMS
from metalearn.functional import LossFn, Params
from metalearn.models import MLP, Conv4, init_params, make_loss

PROBLEMS = EFFICIENCY_PROBLEMS


@dataclass
class Problem:
    model: nn.Module
    loss_fn: LossFn
    params: Params
    support: tuple[Tensor, Tensor]  # leading task dimension
    query: tuple[Tensor, Tensor]


def make_problem(
    name: str,
    meta_batch: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> Problem:
    """A meta-batch of ``meta_batch`` tasks of problem ``name`` (one of :data:`PROBLEMS`)."""
    g = torch.Generator().manual_seed(seed)
    if name == "cf_mlp":
        model: nn.Module = MLP(in_dim=100, out_dim=1, hidden=(40, 40), activation="tanh")
        kind = "mse"

        def batch(n: int) -> tuple[Tensor, Tensor]:
            x = torch.randn(meta_batch, n, 100, generator=g) / 10  # embedding-sized features
            return x, torch.rand(meta_batch, n, generator=g)  # ratings scaled to [0, 1]

        support, query = batch(10), batch(15)
    elif name == "omniglot_conv4":
        model = Conv4(in_channels=1, n_classes=5, filters=64, image_size=28)
        kind = "cross_entropy"

        def batch(n: int) -> tuple[Tensor, Tensor]:
            x = torch.rand(meta_batch, 5 * n, 1, 28, 28, generator=g)
            y = torch.arange(5).repeat(n).expand(meta_batch, -1).contiguous()
            return x, y

        support, query = batch(1), batch(1)
    else:
        raise ValueError(f"unknown problem {name!r} (valid: {', '.join(PROBLEMS)})")

    def to(t: Tensor) -> Tensor:
        return t.to(device, dtype if t.is_floating_point() else t.dtype)

    params = {k: to(v) for k, v in init_params(model, g).items()}
    model.to(device, dtype)
    support, query = tuple(map(to, support)), tuple(map(to, query))
    return Problem(model, make_loss(model, kind), params, support, query)


def first_iteration(
    learner: str, problem: Problem, steps: int, inner_lr: float = 0.01, **options: Any
) -> tuple[MetaLearner, Params]:
    """``(learner, its parameters on problem)`` as the training loop's first meta-iteration has
    them: the model's and the learner's own (Meta-SGD's and MAML++'s step sizes, MAML++'s
    batch-norm sets), and MAML++'s multi-step loss weights uniform. A learner must be measured
    on what it learns, and the others are unchanged by either."""
    algo = make(learner, steps=steps, inner_lr=inner_lr, **options)
    algo.set_iteration(1)
    return algo, algo.meta_params(problem.params)


def _pair(problem: Problem) -> tuple[Any, Any]:
    return problem.support, problem.query
