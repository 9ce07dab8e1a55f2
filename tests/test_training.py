"""The training loop's own parts: Adam against torch's, the outer step size's schedule, and the
divergence check."""

import dataclasses
import math

import pytest
import torch

from metalearn.config import load_config
from metalearn.config.learners import setting_keys
from metalearn.spec import train_cell
from metalearn.training import (
    DIVERGENCE,
    Adam,
    ItemDecay,
    NonFiniteError,
    _check_divergence,
    meta_lr_at,
)


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


def test_the_cosine_schedule_falls_from_meta_lr_to_its_floor():
    cell = dataclasses.replace(
        train_cell(load_config(), "maml", "cosmixture-shot50"),
        meta_lr=0.01, iterations=5, meta_lr_schedule="cosine", meta_lr_floor=0.1,
    )  # fmt: skip
    got = [meta_lr_at(cell, t) for t in range(1, 6)]
    assert got[0] == 0.01  # the first iteration: meta_lr
    assert got[2] == pytest.approx(0.01 * (0.1 + 0.9 * 0.5))  # halfway: halfway to the floor
    assert got[1] == pytest.approx(0.01 * (0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2))
    assert got[-1] == pytest.approx(0.001)  # the last: floor x meta_lr
    assert got == sorted(got, reverse=True)
    assert meta_lr_at(dataclasses.replace(cell, iterations=1), 1) == 0.01
    constant = dataclasses.replace(cell, meta_lr_schedule="constant")
    assert [meta_lr_at(constant, t) for t in range(1, 6)] == [0.01] * 5


def test_item_decay_pulls_only_the_item_tables_back_to_their_start():
    g = torch.Generator().manual_seed(0)
    params = {
        k: torch.randn(3, 2, generator=g, dtype=torch.float64)
        for k in ("item.bias.weight", "layers.0.weight")
    }
    start = {k: v.clone() for k, v in params.items()}
    decay = ItemDecay(params, rate=2.0)
    moved = {k: v + 1.0 for k, v in params.items()}
    params.update({k: v.clone() for k, v in moved.items()})
    decay.step(params, lr=0.1)
    item, layer = "item.bias.weight", "layers.0.weight"
    assert torch.allclose(params[item], moved[item] - 0.2 * (moved[item] - start[item]))
    assert torch.equal(params[layer], moved[layer])
    decay.step(params, lr=0.5)  # lr x rate = 1: all the way back
    assert torch.allclose(params[item], start[item])
    assert ItemDecay(params, rate=0.0).start == {}  # no decay, no copies
