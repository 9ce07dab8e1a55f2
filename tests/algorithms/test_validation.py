"""Bad names and options fail at construction with a ValueError naming the option and value."""

import pytest

from metalearn.algorithms import NAMES, make


def test_unknown_learner_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown learner 'mamal'") as err:
        make("mamal", steps=1, inner_lr=0.1)
    for name in NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("name", "options", "fragment"),
    [
        ("maml", {"steps": 0}, "steps=0"),
        ("maml", {"steps": 2.5}, "steps=2.5"),
        ("maml", {"steps": True}, "steps=True"),
        ("reptile", {"inner_lr": 0.0}, "inner_lr=0.0"),
        ("fomaml", {"inner_lr": -0.1}, "inner_lr=-0.1"),
        ("maml", {"inner_lr": float("nan")}, "inner_lr=nan"),
        ("imaml", {"lam": 0}, "lam=0"),
        ("imaml", {"lam": -1.0}, "lam=-1.0"),
        ("imaml", {"cg_steps": 0}, "cg_steps=0"),
        ("adjoint", {"scheme": "rk4"}, "scheme='rk4'"),
        ("adjoint", {"trajectory": "tape"}, "trajectory='tape'"),
        ("adjoint", {"checkpoint_every": 0}, "checkpoint_every=0"),
        ("maml", {"lam": 2.0}, "lam=2.0"),  # an option of another learner
        ("adjoint", {"cg_steps": 3}, "cg_steps=3"),
    ],
)
def test_invalid_option_names_option_and_value(name, options, fragment):
    kwargs = {"steps": 3, "inner_lr": 0.1, **options}
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        make(name, **kwargs)


def test_adapt_keys_that_select_nothing_are_rejected():
    import torch

    from tests.algorithms.problems import mlp_loss, mlp_params, regression_task

    gen = torch.Generator().manual_seed(0)
    params = mlp_params(gen)
    support, query = regression_task(gen)
    learner = make("maml", steps=1, inner_lr=0.1, adapt_keys=["decoder"])
    with pytest.raises(ValueError, match="selects none of the parameters"):
        learner.meta_grad(mlp_loss, params, support, query)
