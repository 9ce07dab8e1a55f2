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


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)``, given ``x`` and ``y = 1 - x``.

    ``y`` is passed separately because ``1 - x`` loses all precision when ``x`` is close to 1
    (large ``df`` in the t CDF).
    """
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    )
    front = math.exp(log_front)
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); use symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def student_t_cdf(t: float, df: float) -> float:
    """CDF of Student's t: ``F(t) = 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2`` for ``t >= 0``."""
    tail = 0.5 * _betainc(0.5 * df, 0.5, df / (df + t * t), t * t / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom: ``F^{-1}(p)``, by bisection."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if df <= 0:
        raise ValueError(f"df must be > 0, got {df}")
    if p < 0.5:
        return -student_t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


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
    return mean, student_t_ppf(0.5 * (1.0 + confidence), n - 1) * sem


__all__ = [
    "accuracy",
    "mean_ci",
    "nrmse",
    "rmse",
    "student_t_cdf",
    "student_t_ppf",
]
