"""The training loop's own parts: Adam against torch's, and the divergence check."""

import pytest
import torch

from metalearn.config import load_config
from metalearn.config.learners import setting_keys
from metalearn.spec import train_cell
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
    cell = train_cell(load_config(), "maml", "jester-shot10")
    _check_divergence(0.5 * DIVERGENCE, 1.0, cell, 7)  # still training
    with pytest.raises(NonFiniteError, match=r"maml on jester-shot10: .* diverged at iter") as e:
        _check_divergence(2e12, 0.3, cell, 7)
    # the keys that set this cell's values: the tuned benchmark's own, not algo.inner_lr
    at = "pipeline.benchmarks.jester-shot10"
    assert f"Lower {at}.algo.maml.inner_lr (now {cell.options['inner_lr']:g}) or " in str(e.value)
    assert f"{at}.algo.maml.meta_lr (now {cell.meta_lr:g}), or algo.maml.steps" in str(e.value)


def test_setting_keys_follow_the_precedence():
    cfg = load_config(["+pipeline.benchmarks.alpine-shot50.algo.steps=3", "algo.maml.steps=7"])
    assert setting_keys(cfg, "maml", "cosmixture-shot50")["steps"] == "algo.maml.steps"
    assert setting_keys(cfg, "imaml", "cosmixture-shot50")["steps"] == "algo.steps"
    alpine = setting_keys(cfg, "maml", "alpine-shot50")  # the benchmark's shared key wins
    assert alpine["steps"] == "pipeline.benchmarks.alpine-shot50.algo.steps"
    assert alpine["meta_lr"] == "pipeline.benchmarks.alpine-shot50.algo.maml.meta_lr"
