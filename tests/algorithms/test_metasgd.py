"""Meta-SGD against its closed form on quadratic tasks (float64), and on the head split.

L_s(u) = 1/2 (u - c)^T A (u - c), L_q(u) = 1/2 (u - d)^T B (u - d), and the inner loop
u_{j+1} = u_j - alpha * A (u_j - c) with a step size per entry: u_{j+1} - c = M (u_j - c),
M = I - diag(alpha) A. Then g_theta = (M^K)^T B (u_K - d), and since d u_{j+1} / d alpha =
-diag(A (u_j - c)) at fixed u_j, g_alpha = - sum_j (A (u_j - c)) * ((M^{K-1-j})^T B (u_K - d)).
With ``step_sizes=positive`` the learned entries are log alpha, their gradient alpha * g_alpha.
"""

import pytest
import torch

from metalearn.algorithms import make
from metalearn.algorithms.metasgd import PREFIX
from tests.algorithms.problems import DT, quadratic_loss, quadratic_task, rel_err
from tests.algorithms.test_head_split import _problem

TOL = 1e-8


def closed_form(n: int, steps: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    (a, c), (b, d) = support, query = quadratic_task(n, gen)
    theta = torch.randn(n, generator=gen, dtype=DT)
    alpha = 0.02 + 0.1 * torch.rand(n, generator=gen, dtype=DT)  # a step size per entry
    m = torch.eye(n, dtype=DT) - alpha[:, None] * a
    states = [theta]
    for _ in range(steps):
        states.append(states[-1] - alpha * (a @ (states[-1] - c)))
    query_grad = b @ (states[-1] - d)
    power = torch.linalg.matrix_power
    g_theta = power(m, steps).T @ query_grad
    g_alpha = -sum(
        (a @ (states[j] - c)) * (power(m, steps - 1 - j).T @ query_grad) for j in range(steps)
    )
    params = {"w": theta, PREFIX + "w": alpha}
    return params, support, query, {"w": g_theta, PREFIX + "w": g_alpha}


@pytest.mark.parametrize(("n", "steps"), [(10, 1), (12, 3), (8, 10)])
def test_metasgd_matches_closed_form_in_theta_and_alpha(n, steps):
    params, support, query, want = closed_form(n, steps, seed=steps)
    got = make("metasgd", steps=steps, inner_lr=0.05).meta_grad(
        quadratic_loss, params, support, query
    )
    assert got.keys() == want.keys()
    assert rel_err(got, want) <= TOL


@pytest.mark.parametrize(("n", "steps"), [(10, 1), (8, 10)])
def test_positive_step_sizes_take_the_gradient_in_log_alpha(n, steps):
    params, support, query, want = closed_form(n, steps, seed=steps)
    alpha = params[PREFIX + "w"]
    params[PREFIX + "w"] = torch.log(alpha)
    want[PREFIX + "w"] = alpha * want[PREFIX + "w"]
    learner = make("metasgd", steps=steps, inner_lr=0.05, step_sizes="positive")
    assert rel_err(learner.meta_grad(quadratic_loss, params, support, query), want) <= TOL


def test_positive_step_sizes_adapt_with_alpha_and_start_at_log_inner_lr():
    params, support, _, _ = closed_form(6, 3, seed=1)
    signed = make("metasgd", steps=3, inner_lr=0.05)
    positive = make("metasgd", steps=3, inner_lr=0.05, step_sizes="positive")
    logged = {**params, PREFIX + "w": torch.log(params[PREFIX + "w"])}
    got = positive.adapt(quadratic_loss, logged, support)
    assert rel_err(got, signed.adapt(quadratic_loss, params, support)) <= 1e-14
    start = positive.meta_params({"w": params["w"]})[PREFIX + "w"]
    assert torch.allclose(torch.exp(start), torch.full_like(start, 0.05), rtol=1e-15, atol=0)


def test_an_unknown_step_size_kind_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="step_sizes='log' is invalid.*'signed' or 'positive'"):
        make("metasgd", steps=1, inner_lr=0.1, step_sizes="log")


def test_equal_step_sizes_give_mamls_meta_gradient_on_theta():
    params, support, query, _ = closed_form(10, 4, seed=0)
    params[PREFIX + "w"] = torch.full_like(params["w"], 0.07)
    metasgd = make("metasgd", steps=4, inner_lr=0.07).meta_grad(
        quadratic_loss, params, support, query
    )
    maml = make("maml", steps=4, inner_lr=0.07).meta_grad(
        quadratic_loss, {"w": params["w"]}, support, query
    )
    assert rel_err({"w": metasgd["w"]}, maml) <= 1e-12


def test_meta_params_add_a_step_size_per_adapted_entry_at_inner_lr():
    learner = make("metasgd", steps=1, inner_lr=0.3, adapt_keys=["head"])
    params = {"body.weight": torch.zeros(3, 2), "head.weight": torch.zeros(1, 3)}
    found = learner.meta_params(params)
    assert set(found) == {"body.weight", "head.weight", PREFIX + "head.weight"}
    assert torch.equal(found[PREFIX + "head.weight"], torch.full((1, 3), 0.3))


@pytest.mark.parametrize("step_sizes", ["signed", "positive"])
@pytest.mark.parametrize("model_name", ["mlp", "factors", "conv4"])
def test_the_head_split_gives_the_whole_networks_numbers(model_name, step_sizes):
    split_loss, whole_loss, params, support, query = _problem(model_name)
    learner = make("metasgd", steps=3, inner_lr=0.1, adapt_keys=["head"], step_sizes=step_sizes)
    gen = torch.Generator().manual_seed(3)
    params = {
        k: v + 0.05 * torch.rand(v.shape, generator=gen, dtype=DT) if k.startswith(PREFIX) else v
        for k, v in learner.meta_params(params).items()
    }  # unequal step sizes
    got, got_loss = learner.batched_meta_grad_and_loss(split_loss, params, support, query)
    want, want_loss = learner.batched_meta_grad_and_loss(whole_loss, params, support, query)
    assert got.keys() == want.keys() == params.keys()
    assert rel_err(got, want) < 1e-11
    assert torch.allclose(got_loss, want_loss, rtol=1e-12, atol=0)
    adapted = learner.batched_adapt(split_loss, params, support)
    assert rel_err(adapted, learner.batched_adapt(whole_loss, params, support)) < 1e-12
    assert not any(k.startswith(PREFIX) for k in adapted)  # the model's parameters only
