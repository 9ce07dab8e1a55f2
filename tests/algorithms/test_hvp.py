"""Hessian-vector products: the linearised form (reverse-over-reverse, several products at one
point) equals the forward-over-reverse one in float64, under vmap, on the fast and slow keys."""

import pytest
import torch

from metalearn import functional as F
from metalearn.models import MLP, Conv4, init_params, make_loss


def _problem(model, x, y, kind):
    g = torch.Generator().manual_seed(0)
    params = {k: v.double() for k, v in init_params(model, g).items()}
    model.double()
    return make_loss(model, kind), params, (x.double(), y)


@pytest.mark.parametrize("adapt", [None, ["head"]])
def test_hvp_at_equals_hvp_on_every_key_under_vmap(adapt):
    g = torch.Generator().manual_seed(1)
    model = MLP(in_dim=5, out_dim=1, hidden=(7, 6), activation="tanh")
    loss_fn, params, (x, y) = _problem(
        model,
        torch.randn(3, 8, 5, generator=g),
        torch.rand(3, 8, generator=g, dtype=torch.float64),
        "mse",
    )
    fast, slow = F.split(params, F.adapted_keys(params, adapt))
    vs = [
        {k: torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in fast.items()}
        for _ in range(2)
    ]

    def both(xt, yt):
        hessian = F.hvp_at(loss_fn, fast, slow, (xt, yt))  # two products from one linearisation
        return [hessian(v) for v in vs], [F.hvp(loss_fn, fast, slow, (xt, yt), v) for v in vs]

    linearised, reference = torch.func.vmap(both)(x, y)
    for got, want in zip(linearised, reference, strict=True):
        assert got.keys() == want.keys() == params.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-14)


def test_a_batch_norm_model_takes_the_forward_over_reverse_product():
    """Under vmap, torch's batch-norm double backward reads .data: the loss says so, and the
    product is still the exact one."""
    g = torch.Generator().manual_seed(2)
    model = Conv4(in_channels=1, n_classes=3, filters=4, image_size=16)
    x = torch.rand(2, 6, 1, 16, 16, generator=g)
    y = torch.arange(3).repeat(2).expand(2, -1)
    loss_fn, params, (x, y) = _problem(model, x, y, "cross_entropy")
    assert loss_fn.reverse_hvp is False
    v = {k: torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in params.items()}
    got, want = torch.func.vmap(
        lambda xt, yt: (
            F.hvp_at(loss_fn, params, {}, (xt, yt))(v),
            F.hvp(loss_fn, params, {}, (xt, yt), v),
        )
    )(x, y)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
