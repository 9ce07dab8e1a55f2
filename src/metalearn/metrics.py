"""Per-task metrics and the confidence interval on their mean over meta-test tasks.

Tensor metrics reduce over the last dimension only, so they apply to one task (``[n]``) or a
batch of tasks (``[n_tasks, n]``) and work under ``torch.func.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from torch import Tensor


def rmse(pred: Tensor, target: Tensor) -> Tensor:
    """Root mean squared error per task: ``sqrt((1/n) sum_j (pred_j - target_j)^2)``."""
    return (pred - target).square().mean(-1).sqrt()


def nrmse(pred: Tensor, target: Tensor, scale: float | Tensor = 1.0) -> Tensor:
    """Normalised RMSE per task: ``rmse(pred, target) / scale``.

    Synthetic regression targets are standardised with the meta-train statistics,
    ``y' = (y - mean_train) / std_train``, so the RMSE of standardised predictions and targets
    (``scale=1``, the default) is ``RMSE / std_train``; pass ``scale=std_train`` for raw units.
    (For collaborative filtering the same quantity is the RMSE of ratings scaled to [0, 1].)
    """
    return rmse(pred, target) / scale


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of correct predictions per task: ``(1/n) sum_j [argmax_c logits_jc = labels_j]``."""
    return (logits.argmax(-1) == labels).to(logits.dtype).mean(-1)


def mean_ci(
    values: Sequence[float] | np.ndarray | Tensor, confidence: float = 0.95
) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval on the mean.

    ``half = t_{(1 + confidence)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation
    (``ddof=1``). For ``n = 1`` the half-width is ``nan``; an empty input raises ``ValueError``.
    """
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    n = arr.size
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = float(arr.mean())
    if n == 1:
        return mean, math.nan
    sem = float(arr.std(ddof=1)) / math.sqrt(n)
    from scipy import stats  # 1-2 s to import: only the stages that score pay it

    return mean, float(stats.t.ppf(0.5 * (1.0 + confidence), n - 1)) * sem


__all__ = [
    "accuracy",
    "mean_ci",
    "nrmse",
    "rmse",
]
