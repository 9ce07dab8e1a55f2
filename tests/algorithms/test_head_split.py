"""The head split (``metalearn.head_split``): with only the head adapted, every learner's
meta-gradient and adaptation over the body's cached features equal those of the whole network,
in float64, for the MLP, the collaborative-filtering factor model (its additive item bias) and
the Conv4 (batch norm over each batch)."""

from __future__ import annotations

import pytest
import torch

from metalearn.algorithms import make
from metalearn.head_split import split_of
from metalearn.models import MLP, Conv4, ItemFactorModel, init_params, make_loss
from tests.algorithms.problems import rel_err

DT = torch.float64
LEARNERS = {
    "maml": {},
    "fomaml": {},
    "reptile": {},
    "imaml": {"cg_steps": 4},
    "adjoint-heun-store": {"scheme": "heun", "trajectory": "store"},
    "adjoint-euler-checkpoint": {"scheme": "euler", "trajectory": "checkpoint"},
    "pretrain": {},
    "scratch": {},
}


def _jitter(params, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=DT) for k, v in params.items()}


def _mlp(g):
    model = MLP(3, 1, hidden=(6, 5))
    x = lambda n: torch.randn(2, n, 3, generator=g, dtype=DT)  # noqa: E731
    y = lambda n: torch.randn(2, n, generator=g, dtype=DT)  # noqa: E731
    return model, "mse", (x(7), y(7)), (x(9), y(9))


def _factors(g):
    features = torch.randn(11, 4, generator=torch.Generator().manual_seed(0))
    model = ItemFactorModel(features, mean=0.6, item_dim=3, hidden=(5,))
    ids = lambda n: torch.randint(0, 11, (2, n), generator=g)  # noqa: E731
    y = lambda n: torch.rand(2, n, generator=g, dtype=DT)  # noqa: E731
    return model, "mse", (ids(6), y(6)), (ids(8), y(8))


def _conv4(g):
    model = Conv4(1, 3, filters=4, image_size=16)
    x = lambda n: torch.randn(2, n, 1, 16, 16, generator=g, dtype=DT)  # noqa: E731
    y = lambda n: torch.arange(n).remainder(3).expand(2, n)  # noqa: E731
    return model, "cross_entropy", (x(6), y(6)), (x(6), y(6))


MODELS = {"mlp": _mlp, "factors": _factors, "conv4": _conv4}


def _problem(model_name):
    model, kind, support, query = MODELS[model_name](torch.Generator().manual_seed(5))
    model = model.to(DT)
    params = _jitter(init_params(model, torch.Generator().manual_seed(1), dtype=DT), 2)
    split_loss = make_loss(model, kind)
    assert split_of(split_loss, ["head.weight", "head.bias"]) is not None
    whole_loss = lambda p, b: split_loss(p, b)  # noqa: E731  (no head_split: the whole network)
    return split_loss, whole_loss, params, support, query


def _learner(name, adapt=("head",)):
    return make(name.split("-")[0], steps=4, inner_lr=0.1, adapt_keys=adapt, **LEARNERS[name])


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name", LEARNERS)
def test_meta_grad_on_the_head_split_equals_the_whole_network(model_name, name):
    split_loss, whole_loss, params, support, query = _problem(model_name)
    learner = _learner(name)
    got, got_loss = learner.batched_meta_grad_and_loss(split_loss, params, support, query)
    want, want_loss = learner.batched_meta_grad_and_loss(whole_loss, params, support, query)
    assert got.keys() == want.keys() == params.keys()
    assert rel_err(got, want) < 1e-11
    assert torch.allclose(got_loss, want_loss, rtol=1e-12, atol=0)
    looped, _ = learner.looped_meta_grad_and_loss(split_loss, params, support, query)
    assert rel_err(looped, want) < 1e-11


@pytest.mark.parametrize("model_name", MODELS)
def test_adapt_on_the_head_split_equals_the_whole_network(model_name):
    split_loss, whole_loss, params, support, _ = _problem(model_name)
    learner = _learner("imaml")
    got = learner.batched_adapt(split_loss, params, support)
    want = learner.batched_adapt(whole_loss, params, support)
    assert rel_err(got, want) < 1e-12
    assert not torch.equal(got["head.weight"][0], params["head.weight"])  # it did adapt


def test_the_split_applies_only_when_the_head_alone_adapts():
    split_loss, *_ = _problem("mlp")
    assert split_of(split_loss, ["head.bias"]) is not None
    assert split_of(split_loss, ["head.weight", "layers.0.weight"]) is None
    assert split_of(lambda p, b: 0.0, ["head.weight"]) is None
    # every key adapted: the whole network, and the same numbers as before the split existed
    _, whole_loss, params, support, query = _problem("mlp")
    learner = _learner("maml", adapt=None)
    a = learner.batched_meta_grad(split_loss, params, support, query)
    b = learner.batched_meta_grad(whole_loss, params, support, query)
    assert all(torch.equal(a[k], b[k]) for k in a)
