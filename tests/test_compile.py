"""``train.compile``: the compiled meta-gradient trains to the eager numbers, ``auto`` compiles
long runs only, and a learner torch cannot compile fails with the fix."""

import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters

from metalearn import paths
from metalearn.config import load_config
from metalearn.data.episodes import load_episodes
from metalearn.spec import COMPILE_FROM, train_cell
from metalearn.training import CompileError, meta_train

B = "cosmixture-shot50"
TINY = [
    "algo.steps=2",
    "algo.maml.steps=null",
    "algo.mamlpp.steps=null",
    "train.iterations=3",
    "train.val_every=1",
    "train.meta_batch=2",
    "model.hidden=[8]",
    "eval.tasks=3",
    "data.cosmixture.functions={train:6,val:3,test:3}",
    f"~pipeline.benchmarks.{B}.algo",  # its tuned step sizes: the top level's here
]


@pytest.fixture
def source(make_workdir):
    make_workdir(TINY)
    return load_episodes(paths.episodes(B))


def test_auto_compiles_long_runs_and_the_spec_says_which():
    short = train_cell(load_config(["train.iterations=10"]), "maml", B)
    long = train_cell(load_config([f"train.iterations={COMPILE_FROM}"]), "maml", B)
    forced = train_cell(load_config(["train.iterations=10", "train.compile=true"]), "maml", B)
    off = train_cell(
        load_config([f"train.iterations={COMPILE_FROM}", "train.compile=false"]), "maml", B
    )
    assert (short.compile, long.compile, forced.compile, off.compile) == (False, True, True, False)
    assert short.spec()["train"]["compile"] is False and forced.spec()["train"]["compile"] is True


def test_a_compile_value_that_is_neither_auto_nor_a_bool_is_refused():
    with pytest.raises(ValueError, match=r"train\.compile"):
        load_config(["train.compile=sometimes"])


@pytest.mark.slow
def test_compiled_training_equals_eager_in_float32(source):
    """MAML (second order through the loop): 3 iterations, the same seed, 1e-6 apart."""
    cell = train_cell(load_config([*TINY, "train.compile=false"]), "maml", B)
    eager = meta_train(cell, source, torch.device("cpu"))
    compiled = meta_train(dataclasses.replace(cell, compile=True), source, torch.device("cpu"))
    for k, v in eager.params.items():
        torch.testing.assert_close(compiled.params[k], v, rtol=1e-6, atol=1e-6)
    losses = [
        (r["meta_train_loss"], c["meta_train_loss"])
        for r, c in zip(eager.curve, compiled.curve, strict=True)
    ]
    assert all(abs(a - b) <= 1e-6 * max(1.0, abs(a)) for a, b in losses)
    assert compiled.compile_seconds > 0 and eager.compile_seconds == 0


def test_a_learner_torch_cannot_compile_fails_naming_the_fix(source, monkeypatch):
    def refuse(fn):
        def call(*args):
            raise torch._dynamo.exc.TorchDynamoException("an operator inductor cannot lower")

        return call

    monkeypatch.setattr(torch, "compile", refuse)
    cell = train_cell(load_config([*TINY, "train.compile=true"]), "fomaml", B)
    with pytest.raises(CompileError, match=r"fomaml on cosmixture-shot50: .*train\.compile: false"):
        meta_train(cell, source, torch.device("cpu"))


@pytest.mark.slow
def test_mamlpps_schedule_reaches_the_compiled_meta_gradient_without_a_compile_a_step(source):
    """MAML++'s loss weights change every iteration and its flags flip twice: the compiled
    meta-gradient follows them (eager's numbers) and torch compiles three graphs, not one an
    iteration."""
    options = ["algo.mamlpp.msl_iterations=3", "algo.mamlpp.first_order_until=2"]
    config = load_config([*TINY, *options, "train.iterations=6", "train.compile=false"])
    cell = train_cell(config, "mamlpp", B)
    eager = meta_train(cell, source, torch.device("cpu"))
    torch._dynamo.reset()
    counters.clear()
    compiled = meta_train(dataclasses.replace(cell, compile=True), source, torch.device("cpu"))
    for k, v in eager.params.items():
        torch.testing.assert_close(compiled.params[k], v, rtol=1e-5, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 3
