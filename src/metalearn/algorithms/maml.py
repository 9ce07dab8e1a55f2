"""MAML (Finn et al. 2017): the exact second-order meta-gradient through all K inner steps."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metalearn import functional as F
from metalearn.algorithms.base import MetaLearner
from metalearn.functional import LossFn, Params


class MAML(MetaLearner):
    """``g = d L_q(u_K(theta)) / d theta``, by reverse-mode autodiff through the unrolled loop.

    With ``u_{j+1} = u_j - alpha grad L_s(u_j)`` this is
    ``g = prod_{j=K-1..0} (I - alpha H_s(u_j)) grad L_q(u_K)``: exact, but memory grows as O(K).
    """

    name = "maml"
    unrolled = True

    def task_meta_grad(
        self, loss_fn: LossFn, params: Params, support: Any, query: Any
    ) -> tuple[Params, Tensor]:
        def meta_loss(theta: Params) -> Tensor:
            fast, slow = self.split(theta)
            adapted = F.merge(theta, self.adapt_fast(loss_fn, fast, slow, support))
            return loss_fn(adapted, query)

        with torch.no_grad():  # the graph lives only inside torch.func.grad
            grads, loss = torch.func.grad_and_value(meta_loss)(params)
        return grads, loss
