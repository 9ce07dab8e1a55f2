"""Meta-testing: each fixed task adapted on its support set and scored on its query set."""

import pytest
import torch

from metalearn import metrics
from metalearn.algorithms import make
from metalearn.evaluation import per_task_scores
from metalearn.models import MLP, init_params, make_loss, make_predict


@pytest.mark.parametrize(("learner", "adapt_keys"), [("maml", None), ("fomaml", ["head"])])
def test_every_task_scores_as_if_adapted_and_scored_alone(learner, adapt_keys):
    """In chunks of tasks (adapting and predicting in one vmap), the scores are those of each
    task taken alone: the whole network adapted, or the head on the body's features."""
    g = torch.Generator().manual_seed(0)
    model = MLP(2, 1, (8, 8))
    params = init_params(model, g, dtype=torch.float64)
    loss_fn, predict = make_loss(model, "mse"), make_predict(model, "mse")
    x = torch.randn(7, 10, 2, generator=g, dtype=torch.float64)
    y = torch.randn(7, 10, generator=g, dtype=torch.float64)
    tasks = ((x[:, :5], y[:, :5]), (x[:, 5:], y[:, 5:]))
    scorer = make(learner, steps=3, inner_lr=0.1, adapt_keys=adapt_keys)
    scores = per_task_scores(scorer, loss_fn, predict, params, tasks, "mse", chunk_size=3)
    alone = [
        metrics.rmse(
            predict(scorer.adapt(loss_fn, params, (x[i, :5], y[i, :5])), x[i, 5:]), y[i, 5:]
        )
        for i in range(7)
    ]
    assert torch.allclose(scores, torch.stack(alone), rtol=1e-12)
