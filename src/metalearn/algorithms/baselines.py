"""The two baselines of the seeds' meta-learning vs multi-task comparison (seeds 002, 003).

Both are meta-tested like every learner (``adapt``: K steps of gradient descent on the support
set from the learned ``theta``); they differ only in how ``theta`` is learned:

* :class:`Pretrain` trains one model jointly on all meta-train tasks: its direction is the
  gradient of the loss on a task's support and query sets together, at ``theta`` (no inner loop);
* :class:`Scratch` learns nothing (``meta_trained = False``): meta-test starts from the random
  initialisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metalearn.algorithms.base import MetaLearner
from metalearn.functional import LossFn, Params


def _joint(support: Any, query: Any) -> Any:
    """One batch holding a task's support and query examples: ``(x, y)`` pairs concatenated."""
    return torch.utils._pytree.tree_map(lambda s, q: torch.cat([s, q]), support, query)


class Pretrain(MetaLearner):
    """``g = grad L(theta; support + query)``, the multi-task (joint training) gradient; the
    reported loss is that joint loss at ``theta``, before any adaptation."""

    name = "pretrain"
    baseline = True
    meta_grad_on_head_split = False  # its joint batch has other batch-norm statistics

    def task_meta_grad(
        self, loss_fn: LossFn, params: Params, support: Any, query: Any
    ) -> tuple[Params, Tensor]:
        with torch.no_grad():
            joint = _joint(support, query)
            return torch.func.grad_and_value(lambda p: loss_fn(p, joint))(params)


class Scratch(MetaLearner):
    """No meta-training: ``theta`` stays the random initialisation. Its direction is zero; the
    reported loss is the query loss after adapting from ``theta``."""

    name = "scratch"
    baseline = True
    meta_trained = False

    def task_meta_grad(
        self, loss_fn: LossFn, params: Params, support: Any, query: Any
    ) -> tuple[Params, Tensor]:
        adapted = self.adapt(loss_fn, params, support)
        return {k: torch.zeros_like(v) for k, v in params.items()}, loss_fn(adapted, query)
