"""The vmap-batched meta-gradient equals the mean of the per-task loop, for every learner."""

import pytest
import torch

from metalearn.algorithms import NAMES, make
from tests.algorithms.problems import (
    mlp_loss,
    mlp_params,
    quadratic_loss,
    quadratic_task,
    regression_task,
    rel_err,
    stack_tasks,
)

OPTIONS = {"imaml": {"lam": 2.0, "cg_steps": 5}, "adjoint": {"trajectory": "checkpoint"}}


@pytest.mark.parametrize("adapt", [None, ["head"]])
@pytest.mark.parametrize("name", NAMES)
def test_batched_equals_loop_on_mlp(name, adapt):
    gen = torch.Generator().manual_seed(1)
    params = mlp_params(gen)
    support, query = stack_tasks([regression_task(gen) for _ in range(4)])
    learner = make(name, steps=3, inner_lr=0.1, adapt_keys=adapt, **OPTIONS.get(name, {}))
    batched, batched_loss = learner.batched_meta_grad_and_loss(mlp_loss, params, support, query)
    looped, looped_loss = learner.looped_meta_grad_and_loss(mlp_loss, params, support, query)
    assert rel_err(batched, looped) < 1e-12
    assert torch.allclose(batched_loss, looped_loss, rtol=1e-12)
    if learner.meta_trained:  # a mean over tasks, not any single task (scratch's is zero)
        first = learner.meta_grad(
            mlp_loss, params, *[tuple(t[0] for t in s) for s in (support, query)]
        )
        assert rel_err(first, looped) > 1e-3


# pretrain joins a task's support and query examples (a quadratic task is a matrix, not
# examples); bias adapts a model's head.bias (a quadratic has one parameter vector)
@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("pretrain", "bias")])
def test_batched_equals_loop_on_quadratics(name):
    gen = torch.Generator().manual_seed(2)
    support, query = stack_tasks([quadratic_task(10, gen) for _ in range(5)])
    params = {"w": torch.randn(10, generator=gen, dtype=torch.float64)}
    learner = make(name, steps=4, inner_lr=0.1, **OPTIONS.get(name, {}))
    batched = learner.batched_meta_grad(quadratic_loss, params, support, query)
    looped, _ = learner.looped_meta_grad_and_loss(quadratic_loss, params, support, query)
    assert rel_err(batched, looped) < 1e-12


def test_chunked_vmap_equals_unchunked():
    gen = torch.Generator().manual_seed(3)
    params = mlp_params(gen)
    support, query = stack_tasks([regression_task(gen) for _ in range(5)])
    learner = make("maml", steps=2, inner_lr=0.1)
    whole = learner.batched_meta_grad(mlp_loss, params, support, query)
    chunked = learner.batched_meta_grad(mlp_loss, params, support, query, chunk_size=2)
    assert rel_err(chunked, whole) < 1e-12


def test_batched_adapt_equals_adapt_per_task():
    gen = torch.Generator().manual_seed(4)
    params = mlp_params(gen)
    support, _ = stack_tasks([regression_task(gen) for _ in range(3)])
    learner = make("imaml", steps=3, inner_lr=0.1)
    batched = learner.batched_adapt(mlp_loss, params, support)
    for i in range(3):
        single = learner.adapt(mlp_loss, params, tuple(t[i] for t in support))
        assert rel_err({k: v[i] for k, v in batched.items()}, single) < 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_batched_equals_loop_on_conv4_with_batch_norm(name):
    """Conv4 under vmap runs grouped convolutions and per-task batch statistics; in float64 the
    batched meta-gradient still equals the loop (float32 differs by round-off only)."""
    from metalearn.models import Conv4, init_params, make_loss

    gen = torch.Generator().manual_seed(5)
    model = Conv4(in_channels=1, n_classes=3, filters=4, image_size=28)
    params = init_params(model, gen, dtype=torch.float64)
    loss_fn = make_loss(model, "cross_entropy")

    def batch(per_class):
        x = torch.rand(3, 3 * per_class, 1, 28, 28, generator=gen, dtype=torch.float64)
        return x, torch.arange(3).repeat_interleave(per_class).expand(3, -1).contiguous()

    support, query = batch(1), batch(2)
    learner = make(name, steps=2, inner_lr=0.1, **OPTIONS.get(name, {}))
    batched = learner.batched_meta_grad(loss_fn, params, support, query)
    looped, _ = learner.looped_meta_grad_and_loss(loss_fn, params, support, query)
    assert rel_err(batched, looped) < 1e-10
