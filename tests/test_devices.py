"""Device placement without a GPU: every learner's meta-gradient runs with its parameters and
tasks on torch's ``meta`` device (shapes only, no data), so a tensor the code creates on the
default device instead of its inputs' fails here as it would on CUDA. The ``cuda``-marked tests
run a short train and evaluate on a real GPU, and are skipped without one."""

import pytest
import torch

from metalearn.algorithms import NAMES, make
from metalearn.config import load_config
from metalearn.efficiency.problems import make_problem
from metalearn.spec import evaluate_cell, train_cell
from metalearn.stages import episodify as episodify_stage
from metalearn.stages import evaluate as evaluate_stage
from metalearn.stages import train as train_stage

GRADIENT_LEARNERS = [n for n in NAMES if n != "bias"]
META = torch.device("meta")


def on_meta(tree):
    return torch.utils._pytree.tree_map(lambda t: t.to(META), tree)


@pytest.mark.parametrize("problem_name", ["cf_mlp", "omniglot_conv4"])
@pytest.mark.parametrize("learner", GRADIENT_LEARNERS)
@pytest.mark.parametrize("adapt", [None, ["head"]])
def test_every_meta_gradient_stays_on_its_inputs_device(problem_name, learner, adapt):
    problem = make_problem(problem_name, meta_batch=2)
    problem.model.to(META)  # buffers only: the parameters are passed in
    grads, loss = make(
        learner, steps=2, inner_lr=0.01, adapt_keys=adapt
    ).batched_meta_grad_and_loss(
        problem.loss_fn, on_meta(problem.params), on_meta(problem.support), on_meta(problem.query)
    )
    assert loss.device == META
    assert {k: g.device for k, g in grads.items()} == {k: META for k in problem.params}
    assert {k: g.shape for k, g in grads.items()} == {k: v.shape for k, v in problem.params.items()}


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
def test_train_and_evaluate_on_cuda(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    b = "cosmixture-shot50"
    cfg = load_config([
        "train.device=cuda", "train.iterations=3", "train.val_every=1", "train.meta_batch=2",
        "train.seeds=1", "eval.tasks=3", "data.cosmixture.functions={train:6,val:3,test:3}",
        "pipeline.learners=[maml,fomaml,reptile,imaml,adjoint,pretrain,scratch]",
    ])  # fmt: skip
    episodify_stage.run(cfg, b)
    for learner in cfg.pipeline.learners:
        assert train_stage.run(train_cell(cfg, learner, b))["device"].startswith("cuda")
    results = evaluate_stage.run(evaluate_cell(cfg, b))
    assert all(r["mean"] == r["mean"] for r in results.values())  # finite, not NaN
