"""Meta-testing: adapt to each fixed task's support set, score on its query set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from metalearn import metrics
from metalearn.algorithms import MetaLearner
from metalearn.data.episodes import Batch
from metalearn.functional import LossFn, Params
from metalearn.models import PredictFn


@dataclass(frozen=True)
class Metric:
    """How a benchmark is scored per task."""

    name: str
    higher_is_better: bool


#: An evaluate record's key for the scores on every eligible meta-test user (the rating
#: benchmarks), beside the protocol's first ``eval.tasks`` tasks.
ALL_USERS = "all_users"

METRICS = {
    # RMSE of standardised targets (synthetic) or of ratings scaled to [0, 1] (CF)
    "mse": Metric("nrmse", higher_is_better=False),
    "cross_entropy": Metric("accuracy", higher_is_better=True),
}


def per_task_scores(
    learner: MetaLearner,
    loss_fn: LossFn,
    predict: PredictFn,
    params: Params,
    tasks: tuple[Batch, Batch],
    loss_kind: Literal["mse", "cross_entropy"],
    chunk_size: int | None = 32,
) -> Tensor:
    """The metric of every task after ``learner.adapt`` on its support set: a ``[n_tasks]``
    tensor (nRMSE for regression, accuracy for classification). Each task is adapted and
    predicted in one ``vmap``: only a chunk's adapted parameters exist at a time, never a copy
    of every parameter per task (thousands of users times the item tables)."""
    support, (query_x, query_y) = tasks

    def outputs_of(task_support: Batch, task_x: Tensor) -> Tensor:
        return predict(learner.adapt(loss_fn, params, task_support), task_x)

    with torch.no_grad():
        outputs = torch.func.vmap(outputs_of, chunk_size=chunk_size)(support, query_x)
    if loss_kind == "mse":
        return metrics.rmse(outputs, query_y)
    return metrics.accuracy(outputs, query_y)
