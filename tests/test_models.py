"""Models: parameter names, deterministic init, and vmap over tasks equal to the Python loop."""

import math

import pytest
import torch
from torch.func import grad, vmap

from metalearn.models import MLP, Conv4, init_params, make_loss, make_predict

DTYPES = [torch.float32, torch.float64]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_dicts_close(a, b, **kw):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], **kw)


def test_mlp_names_and_shapes():
    model = MLP(3, 1, hidden=(40, 20))
    params = init_params(model, gen())
    assert list(params) == [
        "layers.0.weight",
        "layers.0.bias",
        "layers.1.weight",
        "layers.1.bias",
        "head.weight",
        "head.bias",
    ]
    assert params["layers.0.weight"].shape == (40, 3)
    assert params["head.weight"].shape == (1, 20)
    assert make_predict(model)(params, torch.zeros(7, 3)).shape == (7,)
    assert make_predict(model, "cross_entropy")(params, torch.zeros(7, 3)).shape == (7, 1)


def test_mlp_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation"):
        MLP(1, 1, activation="gelu")


def test_conv4_names_shapes_and_no_running_stats():
    model = Conv4(1, 5)
    params = init_params(model, gen())
    assert {"head.weight", "head.bias"} <= params.keys()
    assert params["head.weight"].shape == (5, 64)  # 28 -> 14 -> 7 -> 3 -> 1
    assert params["blocks.0.conv.weight"].shape == (64, 1, 3, 3)
    assert list(model.buffers()) == []  # batch statistics only, nothing tracked
    torch.testing.assert_close(params["blocks.2.norm.weight"], torch.ones(64))
    torch.testing.assert_close(params["blocks.2.norm.bias"], torch.zeros(64))
    assert Conv4(3, 5, filters=32, image_size=84).head.in_features == 32 * 5 * 5


def test_conv4_batch_norm_uses_batch_statistics():
    model = Conv4(1, 5, filters=8).double()
    params = init_params(model, gen(), dtype=torch.float64)
    x = torch.randn(5, 1, 28, 28, generator=gen(1), dtype=torch.float64)
    predict = make_predict(model, "cross_entropy")
    # The first conv is affine, so scaling the input by c > 0 scales (conv(x) - bias); batch
    # normalisation with the batch's own statistics removes it (up to eps).
    params_nobias = dict(params, **{"blocks.0.conv.bias": torch.zeros(8, dtype=torch.float64)})
    out = predict(params_nobias, x)
    torch.testing.assert_close(predict(params_nobias, 3.0 * x), out, rtol=1e-4, atol=1e-4)
    model.eval()  # no running statistics: eval mode is the same function
    torch.testing.assert_close(predict(params_nobias, x), out)


def test_init_is_deterministic_and_uses_default_bounds():
    model = MLP(2, 1)
    a, b = init_params(model, gen(3)), init_params(model, gen(3))
    c = init_params(model, gen(4))
    assert_dicts_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a["layers.0.weight"], c["layers.0.weight"])
    for k, v in a.items():
        assert not v.requires_grad and v.dtype == torch.float32
        fan_in = 2 if k.startswith("layers.0") else 40
        assert v.abs().max() <= 1 / math.sqrt(fan_in)
    d = init_params(model, gen(3), dtype=torch.float64)
    assert_dicts_close({k: v.float() for k, v in d.items()}, a, rtol=0, atol=0)


def test_module_construction_does_not_touch_global_rng():
    state = torch.random.get_rng_state()
    MLP(2, 1)
    Conv4(1, 5, filters=4)
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_mlp_vmap_loss_and_grad_equal_loop(dtype, device):
    model = MLP(2, 1)
    params = init_params(model, gen(), dtype=dtype, device=device)
    loss_fn = make_loss(model, "mse")
    x = torch.randn(4, 10, 2, generator=gen(1), dtype=dtype).to(device)
    y = torch.randn(4, 10, generator=gen(2), dtype=dtype).to(device)
    batched = vmap(loss_fn, in_dims=(None, 0))(params, (x, y))
    looped = torch.stack([loss_fn(params, (x[t], y[t])) for t in range(4)])
    torch.testing.assert_close(batched, looped)
    manual = (make_predict(model)(params, x[0]) - y[0]).square().mean()
    torch.testing.assert_close(looped[0], manual)
    grads = vmap(grad(loss_fn), in_dims=(None, 0))(params, (x, y))
    for t in range(4):
        assert_dicts_close({k: v[t] for k, v in grads.items()}, grad(loss_fn)(params, (x[t], y[t])))


@pytest.mark.parametrize("device", DEVICES)
def test_conv4_vmap_loss_and_grad_equal_loop(device):
    # 5-way 1-shot 28x28, 3 tasks, per-task parameters (as after inner-loop adaptation).
    model = Conv4(1, 5, filters=8)
    params = init_params(model, gen(), dtype=torch.float64, device=device)
    loss_fn = make_loss(model, "cross_entropy")
    n_tasks = 3
    x = torch.randn(n_tasks, 5, 1, 28, 28, generator=gen(1), dtype=torch.float64).to(device)
    y = torch.stack([torch.randperm(5, generator=gen(t)) for t in range(n_tasks)]).to(device)
    task_params = {
        k: torch.stack([v * (1 + 0.1 * t) for t in range(n_tasks)]) for k, v in params.items()
    }
    batched = vmap(loss_fn)(task_params, (x, y))
    looped = torch.stack(
        [loss_fn({k: v[t] for k, v in task_params.items()}, (x[t], y[t])) for t in range(n_tasks)]
    )
    torch.testing.assert_close(batched, looped)
    grads = vmap(grad(loss_fn), in_dims=(None, 0))(params, (x, y))
    for t in range(n_tasks):
        assert_dicts_close({k: v[t] for k, v in grads.items()}, grad(loss_fn)(params, (x[t], y[t])))


def test_make_loss_rejects_unknown_kind():
    with pytest.raises(ValueError, match="loss kind"):
        make_loss(MLP(1, 1), "hinge")


# ------------------------------------------------------------- collaborative-filtering models


def _factor_model(dtype=torch.float32, item_dim=3):
    from metalearn.models import ItemFactorModel

    features = torch.randn(9, 4, generator=torch.Generator().manual_seed(0))
    model = ItemFactorModel(features, mean=0.6, item_dim=item_dim, hidden=(5,))
    return model, features, init_params(model, torch.Generator().manual_seed(1), dtype=dtype)


def test_item_feature_mlp_is_the_mlp_over_the_features_of_the_ids():
    from metalearn.models import ItemFeatureMLP

    features = torch.randn(7, 4, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[0, 6, 3], [2, 2, 5]])
    rated = ItemFeatureMLP(features, hidden=(5, 3))
    plain = MLP(4, 1, hidden=(5, 3))
    p_rated = init_params(rated, torch.Generator().manual_seed(2))
    p_plain = init_params(plain, torch.Generator().manual_seed(2))
    assert p_rated.keys() == p_plain.keys()
    assert all(torch.equal(p_rated[k], p_plain[k]) for k in p_plain)
    out = vmap(make_predict(rated), in_dims=(None, 0))(p_rated, ids)
    assert torch.allclose(out, make_predict(plain)(p_plain, features[ids]))


def test_item_factor_model_starts_at_the_mean_and_adds_the_item_tables():
    model, features, params = _factor_model()
    assert set(params) == {
        "item.bias.weight",
        "item.embedding.weight",
        "layers.0.weight",
        "layers.0.bias",
        "head.weight",
        "head.bias",
    }
    assert params["layers.0.weight"].shape == (5, 4 + 3)  # item features + learned embedding
    assert (params["head.weight"] == 0).all() and params["head.bias"].item() == pytest.approx(0.6)
    assert (params["item.embedding.weight"] == 0).all() and (params["item.bias.weight"] == 0).all()
    ids = torch.tensor([1, 8, 8, 0])
    predict = make_predict(model)
    assert torch.allclose(predict(params, ids), torch.full((4,), 0.6))
    g = torch.Generator().manual_seed(3)
    p = {k: torch.randn(v.shape, generator=g) for k, v in params.items()}
    z = torch.cat([features[ids], p["item.embedding.weight"][ids]], -1)
    h = torch.tanh(z @ p["layers.0.weight"].T + p["layers.0.bias"])
    expected = h @ p["head.weight"][0] + p["head.bias"] + p["item.bias.weight"][ids, 0]
    assert torch.allclose(predict(p, ids), expected, atol=1e-6)


def test_item_factor_model_without_embedding_uses_the_features_only():
    model, _, params = _factor_model(item_dim=0)
    assert "item.embedding.weight" not in params and params["layers.0.weight"].shape == (5, 4)


@pytest.mark.parametrize("adapt", [None, ["head"]])
def test_maml_through_item_tables_equals_unrolled_autograd(adapt):
    """MAML's meta-gradient of the factor model (item-id gathers under vmap, adapted or shared
    tables) equals plain autograd through the unrolled inner loop, in float64."""
    from metalearn.algorithms import make
    from tests.algorithms.problems import rel_err, unrolled_meta_grad

    model, _, params = _factor_model(torch.float64)
    g = torch.Generator().manual_seed(4)
    params = {
        k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()
    }
    loss_fn = make_loss(model, "mse")
    support = (torch.tensor([0, 3, 3, 7]), torch.rand(4, generator=g, dtype=torch.float64))
    query = (torch.tensor([3, 5, 0]), torch.rand(3, generator=g, dtype=torch.float64))
    expected = unrolled_meta_grad(loss_fn, params, support, query, 3, 0.2, adapt)
    learner = make("maml", steps=3, inner_lr=0.2, adapt_keys=adapt)
    got = learner.meta_grad(loss_fn, params, support, query)
    assert rel_err(got, expected) < 1e-12
    assert got["item.bias.weight"][[1, 2, 4, 6, 8]].abs().max() == 0  # items not in the task
    stacked = tuple(torch.stack([t, t]) for t in support), tuple(torch.stack([t, t]) for t in query)
    assert rel_err(learner.batched_meta_grad(loss_fn, params, *stacked), expected) < 1e-12
