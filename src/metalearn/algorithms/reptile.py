"""Reptile (Nichol et al. 2018): move theta towards the adapted parameters."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metalearn import functional as F
from metalearn.algorithms.base import MetaLearner
from metalearn.functional import LossFn, Params


class Reptile(MetaLearner):
    """Direction ``g = theta - u_K`` (zero on non-adapted keys); an outer SGD step with rate
    ``eps`` is Reptile's ``theta <- theta + eps (u_K - theta)``. The query set is used only for
    the reported loss ``L_q(u_K)``."""

    name = "reptile"

    def task_meta_grad(
        self, loss_fn: LossFn, params: Params, support: Any, query: Any
    ) -> tuple[Params, Tensor]:
        with torch.no_grad():
            adapted = self.adapt(loss_fn, params, support)
            return F.sub(params, adapted), loss_fn(adapted, query)
