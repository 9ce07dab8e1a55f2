"""Metrics: per-task RMSE/accuracy and the Student-t confidence interval."""

import math

import numpy as np
import pytest
import torch
from torch.func import vmap

from metalearn.metrics import accuracy, mean_ci, nrmse, rmse


def test_rmse_per_task():
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 2.0, 3.0, 6.0], [3.0, -3.0, 3.0, -3.0]], dtype=torch.float64)
    torch.testing.assert_close(rmse(pred, target), torch.tensor([1.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(vmap(rmse)(pred, target), rmse(pred, target))
    torch.testing.assert_close(nrmse(pred, target), rmse(pred, target))
    # Raw-unit targets with train std 2: nRMSE equals the RMSE of the standardised values.
    mean, std = 5.0, 2.0
    torch.testing.assert_close(
        nrmse(pred, target, scale=std), rmse((pred - mean) / std, (target - mean) / std)
    )


def test_accuracy_per_task():
    logits = torch.tensor([[[2.0, 1.0], [0.0, 3.0]], [[2.0, 1.0], [4.0, 3.0]]], dtype=torch.float64)
    labels = torch.tensor([[0, 1], [1, 1]])
    torch.testing.assert_close(
        accuracy(logits, labels), torch.tensor([1.0, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(vmap(accuracy)(logits, labels), accuracy(logits, labels))


@pytest.mark.parametrize(("n", "t_quantile"), [(100, 1.984217), (10, 2.262157)])
def test_mean_ci_uses_the_student_t_quantile(n, t_quantile):
    values = np.linspace(0.0, 1.0, n)
    mean, half = mean_ci(values, confidence=0.95)
    assert half == pytest.approx(t_quantile * values.std(ddof=1) / np.sqrt(n), rel=1e-6)


def test_mean_ci_known_values():
    values = np.arange(10, dtype=np.float64)  # mean 4.5, sample std sqrt(55/6)
    mean, half = mean_ci(values)
    assert mean == 4.5
    assert half == pytest.approx(2.262157 * math.sqrt(55 / 6) / math.sqrt(10), rel=1e-6)
    values = np.linspace(0.0, 1.0, 100)
    mean, half = mean_ci(list(values), confidence=0.95)
    assert half == pytest.approx(1.984217 * values.std(ddof=1) / 10, rel=1e-6)
    assert mean_ci(torch.tensor([1.0, 3.0]))[0] == 2.0


def test_mean_ci_edge_cases():
    mean, half = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(half)
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 0.0)
    with pytest.raises(ValueError):
        mean_ci([])
    with pytest.raises(ValueError):
        mean_ci([1.0, 2.0], confidence=1.0)
