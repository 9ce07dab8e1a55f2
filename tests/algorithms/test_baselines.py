"""The pretrain and scratch baselines (float64): closed forms on a linear least-squares task."""

import torch

from metalearn.algorithms import make
from tests.algorithms.problems import DT, rel_err


def linear_loss(params, batch):
    x, y = batch
    return ((x @ params["w"] - y) ** 2).mean()


def linear_task(seed, n_support=7, n_query=11, dim=5):
    gen = torch.Generator().manual_seed(seed)
    points = lambda n: (  # noqa: E731
        torch.randn(n, dim, generator=gen, dtype=DT),
        torch.randn(n, generator=gen, dtype=DT),
    )
    return {"w": torch.randn(dim, generator=gen, dtype=DT)}, points(n_support), points(n_query)


def test_pretrain_is_the_joint_least_squares_gradient():
    """g = 2/n X^T (X w - y) over the support and query points together, at theta."""
    params, support, query = linear_task(0)
    x, y = torch.cat([support[0], query[0]]), torch.cat([support[1], query[1]])
    expected = 2 / len(y) * x.T @ (x @ params["w"] - y)
    learner = make("pretrain", steps=3, inner_lr=0.1)
    assert rel_err(learner.meta_grad(linear_loss, params, support, query), {"w": expected}) <= 1e-12
    _, loss = learner.task_meta_grad(linear_loss, params, support, query)
    assert torch.isclose(loss, ((x @ params["w"] - y) ** 2).mean())


def test_pretrain_ignores_the_inner_loop_in_training():
    params, support, query = linear_task(1)
    grads = [
        make("pretrain", steps=k, inner_lr=lr).meta_grad(linear_loss, params, support, query)["w"]
        for k, lr in ((1, 0.1), (20, 0.01))
    ]
    assert torch.equal(*grads)


def test_pretrain_and_scratch_adapt_like_every_learner():
    """Meta-test fine-tuning is K plain gradient steps on the support loss."""
    params, support, _ = linear_task(2)
    w = params["w"].clone()
    x, y = support
    for _ in range(4):
        w = w - 0.05 * 2 / len(y) * x.T @ (x @ w - y)
    for name in ("pretrain", "scratch", "maml"):
        adapted = make(name, steps=4, inner_lr=0.05).adapt(linear_loss, params, support)
        assert rel_err(adapted, {"w": w}) <= 1e-12


def test_scratch_is_not_meta_trained():
    params, support, query = linear_task(3)
    learner = make("scratch", steps=2, inner_lr=0.1)
    assert not learner.meta_trained and make("maml", steps=1, inner_lr=0.1).meta_trained
    assert torch.count_nonzero(learner.meta_grad(linear_loss, params, support, query)["w"]) == 0


def test_pretrain_differs_from_maml():
    """A check that the pretrain test can fail: the joint gradient is not MAML's."""
    params, support, query = linear_task(4)
    pre = make("pretrain", steps=3, inner_lr=0.1).meta_grad(linear_loss, params, support, query)
    maml = make("maml", steps=3, inner_lr=0.1).meta_grad(linear_loss, params, support, query)
    assert rel_err(pre, maml) > 1e-3
