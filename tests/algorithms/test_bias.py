"""The classical CF baseline: closed-form item offsets, the shrunk user offset, meta-val choice."""

import types

import pytest
import torch

from metalearn.algorithms import make
from metalearn.algorithms.bias import fit_item_offsets
from metalearn.models import BiasModel, init_params, make_loss, make_predict

DT = torch.float64


def test_item_offsets_are_shrunk_mean_residuals():
    items = torch.tensor([0, 0, 0, 2, 2, 3])
    ratings = torch.tensor([1.0, 0.5, 0.0, 1.0, 1.0, 0.25], dtype=DT)
    params = fit_item_offsets(items, ratings, n_items=5, shrinkage=2.0)
    mu = ratings.mean().item()  # 0.625
    assert params["head.bias"].item() == pytest.approx(mu)
    expected = [(1.5 - 3 * mu) / 5, 0.0, (2.0 - 2 * mu) / 4, (0.25 - mu) / 3, 0.0]
    assert params["item.bias.weight"].shape == (5, 1)
    assert params["item.bias.weight"][:, 0].tolist() == pytest.approx(expected, rel=1e-6)
    unshrunk = fit_item_offsets(items, ratings, n_items=5, shrinkage=0.0)["item.bias.weight"]
    assert unshrunk[1, 0] == 0 and unshrunk[0, 0].item() == pytest.approx(0.5 - mu, rel=1e-6)


@pytest.mark.parametrize("user_lam", [0.0, 3.0])
def test_adapt_is_the_shrunk_user_offset(user_lam):
    model = BiasModel(n_items=4, mean=0.5)
    params = {k: v.double() for k, v in init_params(model, torch.Generator()).items()}
    params["item.bias.weight"] = torch.tensor([[0.1], [-0.2], [0.0], [0.3]], dtype=DT)
    loss_fn = make_loss(model, "mse")
    x = torch.tensor([0, 1, 3, 3, 2])
    y = torch.tensor([0.9, 0.1, 0.7, 1.0, 0.4], dtype=DT)
    learner = make("bias", steps=1, inner_lr=1.0, user_shrinkage=[user_lam])
    adapted = learner.adapt(loss_fn, params, (x, y))
    residual = y - 0.5 - params["item.bias.weight"][x, 0]
    expected = 0.5 + residual.sum() / (len(y) + user_lam)
    assert adapted["head.bias"].item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.equal(adapted["item.bias.weight"], params["item.bias.weight"])
    if user_lam == 0:  # no shrinkage: the least-squares offset, where the gradient vanishes
        grad = torch.func.grad(lambda p: loss_fn(p, (x, y)))(adapted)["head.bias"]
        assert grad.abs().item() < 1e-12
    pred = make_predict(model)(adapted, x)
    assert torch.allclose(pred, adapted["head.bias"] + params["item.bias.weight"][x, 0])


def test_adapting_with_a_grid_of_shrinkages_asks_for_the_fit():
    model = BiasModel(n_items=2, mean=0.5)
    params = init_params(model, torch.Generator())
    learner = make("bias", steps=1, inner_lr=1.0, user_shrinkage=[1.0, 2.0])
    with pytest.raises(ValueError, match="chooses one value on meta-val"):
        learner.adapt(make_loss(model, "mse"), params, (torch.tensor([0]), torch.tensor([1.0])))
    with pytest.raises(ValueError, match="item_shrinkage"):
        make("bias", steps=1, inner_lr=1.0, item_shrinkage=[-1.0])


def test_fit_chooses_the_pair_with_the_best_meta_val_score():
    from metalearn.evaluation import per_task_scores
    from metalearn.training import Task, fit

    gen = torch.Generator().manual_seed(0)
    n_items = 6
    quality = torch.rand(n_items, generator=gen)
    items = torch.randint(n_items, (200,), generator=gen)
    ratings = (quality[items] + 0.3 * torch.rand(200, generator=gen)).clamp(0, 1)
    source = types.SimpleNamespace(
        architecture="ratings",
        loss_kind="mse",
        n_items=n_items,
        mean_rating=float(ratings.mean()),
        train_ratings=lambda: (items, ratings),
    )
    vx = torch.randint(n_items, (4, 8), generator=gen)
    vy = (quality[vx] + 0.3 * torch.rand(4, 8, generator=gen)).clamp(0, 1)
    val = ((vx[:, :3], vy[:, :3]), (vx[:, 3:], vy[:, 3:]))
    grid = {"item_shrinkage": [0.0, 10.0, 1000.0], "user_shrinkage": [0.0, 5.0]}
    learner = make("bias", steps=1, inner_lr=1.0, **grid)
    task = Task.build(types.SimpleNamespace(hidden=[2], activation="tanh"), source, "bias")
    result = fit(learner, task, source, val, torch.device("cpu"))
    scores = {}
    for li in grid["item_shrinkage"]:
        params = fit_item_offsets(items, ratings, n_items, li)
        for lu in grid["user_shrinkage"]:
            one = make("bias", steps=1, inner_lr=1.0, item_shrinkage=[li], user_shrinkage=[lu])
            s = per_task_scores(one, task.loss_fn, task.predict, params, val, "mse")
            scores[(li, lu)] = float(s.mean())
    li, lu = min(scores, key=scores.get)
    assert result.fitted == {"item_shrinkage": [li], "user_shrinkage": [lu]}
    assert result.best_val == pytest.approx(scores[(li, lu)])
    chosen = min(result.grid, key=lambda r: r["meta_val_nrmse"])
    assert len(result.grid) == 6 and result.curve == [{"iteration": 0, **chosen}]
    assert torch.equal(
        result.params["item.bias.weight"],
        fit_item_offsets(items, ratings, n_items, li)["item.bias.weight"],
    )


def test_the_factor_model_started_from_the_bias_fit_predicts_as_bias():
    """``model.item_offsets: bias``: the untrained factors model is the bias baseline (its head
    bias the fit's mean, its item bias the fit's offsets), so the same user-offset step gives
    the same predictions."""
    from metalearn.config import load_config
    from metalearn.training import Task

    gen = torch.Generator().manual_seed(0)
    n_items = 7
    items = torch.randint(n_items, (120,), generator=gen)
    ratings = torch.rand(120, generator=gen)
    source = types.SimpleNamespace(
        architecture="ratings",
        loss_kind="mse",
        n_items=n_items,
        features=torch.randn(n_items, 3, generator=gen),
        mean_rating=float(ratings.mean()),
        train_ratings=lambda: (items, ratings),
    )
    model_cfg = load_config(["model.item_offsets=bias", "model.item_shrinkage=3.0"]).model
    task = Task.build(model_cfg, source, "maml")
    params = init_params(task.model, torch.Generator().manual_seed(1), dtype=DT)
    fit = fit_item_offsets(items, ratings, n_items, 3.0)
    assert torch.allclose(params["item.bias.weight"], fit["item.bias.weight"].double())
    bias = make("bias", steps=1, inner_lr=1.0, user_shrinkage=[0.0])
    baseline = {k: v.double() for k, v in fit.items()}
    x, y = torch.tensor([0, 3, 3, 6]), torch.rand(4, generator=gen, dtype=DT)
    ours = bias.adapt_fast(task.loss_fn, {"head.bias": params["head.bias"]}, params, (x, y))
    theirs = bias.adapt(make_loss(BiasModel(n_items, 0.5), "mse"), baseline, (x, y))
    assert ours["head.bias"].item() == pytest.approx(theirs["head.bias"].item(), rel=1e-9)
    queried = torch.arange(n_items)
    assert torch.allclose(
        task.predict({**params, **ours}, queried),
        make_predict(BiasModel(n_items, 0.5))(theirs, queried),
        atol=1e-7,
    )
