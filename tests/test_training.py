"""The training loop's own parts: Adam against torch's, and the divergence check."""

import pytest
import torch

from metalearn.training import DIVERGENCE, Adam, NonFiniteError, _check_divergence


def test_adam_matches_torch_adam_in_float64():
    gen = torch.Generator().manual_seed(0)
    start = {"w": torch.randn(3, 4, generator=gen, dtype=torch.float64), "b": torch.zeros(4)}
    ours = {k: v.clone() for k, v in start.items()}
    theirs = {k: torch.nn.Parameter(v.clone()) for k, v in start.items()}
    adam = Adam(ours, lr=0.01)
    reference = torch.optim.Adam(theirs.values(), lr=0.01, foreach=False)
    for _ in range(5):
        grads = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in start.items()}
        adam.step(ours, grads)
        for k, p in theirs.items():
            p.grad = grads[k]
        reference.step()
    for k in start:
        assert torch.equal(ours[k], theirs[k].detach()), k
    assert not torch.equal(ours["w"], start["w"])


def test_a_finite_but_diverging_loss_stops_training():
    _check_divergence(0.5 * DIVERGENCE, 1.0, "maml", "cosmixture-shot50", 7)  # still training
    with pytest.raises(NonFiniteError, match=r"maml on cosmixture-shot50: .* diverged at iter"):
        _check_divergence(2e12, 0.3, "maml", "cosmixture-shot50", 7)
