"""Reptile (Nichol et al. 2018): move theta towards the adapted parameters."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metalearn import functional as F
from metalearn.algorithms.base import MetaLearner
from metalearn.functional import LossFn, Params


class Reptile(MetaLearner):
    """Direction ``g = theta - u_K`` on the adapted keys; an outer SGD step with rate ``eps`` is
    Reptile's ``theta <- theta + eps (u_K - theta)``. On a key the inner loop holds at theta
    (``adapt_keys``, e.g. an ANIL body) ``theta - u_K`` is zero, so such keys take the
    first-order query gradient ``dL_q(u_K) / d theta`` instead, as FOMAML does: without it a
    shared body would never train. With every key adapted the query set is used only for the
    reported loss ``L_q(u_K)``."""

    name = "reptile"

    def task_meta_grad(
        self, loss_fn: LossFn, params: Params, support: Any, query: Any
    ) -> tuple[Params, Tensor]:
        with torch.no_grad():
            fast, slow = self.split(params)
            adapted = self.adapt(loss_fn, params, support)
            direction = F.sub(fast, {k: adapted[k] for k in fast})
            if not slow:
                return direction, loss_fn(adapted, query)
            fast_adapted = {k: adapted[k] for k in fast}
            slow_grad, loss = torch.func.grad_and_value(
                lambda s: loss_fn({**fast_adapted, **s}, query)
            )(slow)
            return {k: direction.get(k, slow_grad.get(k)) for k in params}, loss
