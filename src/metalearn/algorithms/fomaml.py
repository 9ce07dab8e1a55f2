"""First-order MAML: the query gradient at the adapted parameters, ignoring d u_K / d theta."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metalearn.algorithms.base import MetaLearner
from metalearn.functional import LossFn, Params


class FOMAML(MetaLearner):
    """``g = grad L_q(u_K)`` (on every key: the non-adapted ones get their partial gradient)."""

    name = "fomaml"

    def task_meta_grad(
        self, loss_fn: LossFn, params: Params, support: Any, query: Any
    ) -> tuple[Params, Tensor]:
        with torch.no_grad():
            adapted = self.adapt(loss_fn, params, support)
            return torch.func.grad_and_value(lambda p: loss_fn(p, query))(adapted)
