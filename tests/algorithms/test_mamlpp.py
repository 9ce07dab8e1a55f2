"""MAML++ (``mamlpp``) in float64: each option against a closed form or an unrolled reference.

On quadratic tasks L_s(u) = 1/2 (u - c)^T A (u - c), L_q(u) = 1/2 (u - d)^T B (u - d), with a
step size alpha_j at inner step j, u_{j+1} - c = M_j (u_j - c) with M_j = I - alpha_j A. The
meta-loss sum_i w_i L_q(u_i) then has

    g_theta   = sum_i w_i (M_{i-1} ... M_0)^T B (u_i - d)
    g_alpha_j = - sum_{i > j} w_i (A (u_j - c)) . ((M_{i-1} ... M_{j+1})^T B (u_i - d)),

since d u_{j+1} / d alpha_j = -A (u_j - c) at fixed u_j.
"""

from __future__ import annotations

import pytest
import torch

from metalearn.algorithms import make
from metalearn.algorithms.mamlpp import BN, LR
from tests.algorithms.problems import DT, quadratic_loss, quadratic_task, rel_err
from tests.algorithms.test_head_split import _problem

TOL = 1e-10
OFF = {"multi_step_loss": False, "per_step_lr": False, "per_step_bn": False}


def mamlpp(steps: int, inner_lr: float = 0.1, adapt=None, **options):
    return make("mamlpp", steps=steps, inner_lr=inner_lr, adapt_keys=adapt, **{**OFF, **options})


def closed_form(theta, alphas, weights, support, query):
    """``(g_theta, [g_alpha_j])`` of ``sum_i w_i L_q(u_i)`` (the module's docstring)."""
    (a, c), (b, d) = support, query
    n, steps = theta.shape[0], len(alphas)
    states = [theta]
    for alpha in alphas:
        states.append(states[-1] - alpha * (a @ (states[-1] - c)))
    m = [torch.eye(n, dtype=DT) - alpha * a for alpha in alphas]

    def chain(first: int, last: int):  # M_{last-1} ... M_first
        out = torch.eye(n, dtype=DT)
        for j in range(first, last):
            out = m[j] @ out
        return out

    g_theta = torch.zeros(n, dtype=DT)
    g_alpha = [torch.zeros((), dtype=DT) for _ in alphas]
    for i in range(1, steps + 1):
        query_grad = weights[i - 1] * (b @ (states[i] - d))
        g_theta += chain(0, i).T @ query_grad
        for j in range(i):
            g_alpha[j] -= (a @ (states[j] - c)) @ (chain(j + 1, i).T @ query_grad)
    return g_theta, g_alpha


def _quadratic(n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    support, query = quadratic_task(n, gen)
    return torch.randn(n, generator=gen, dtype=DT), support, query


@pytest.mark.parametrize("model_name", ["mlp", "conv4"])
@pytest.mark.parametrize("adapt", [None, ("head",)])
def test_with_every_option_off_it_is_maml(model_name, adapt):
    split_loss, _, params, support, query = _problem(model_name)
    learner = mamlpp(3, adapt=adapt)
    maml = make("maml", steps=3, inner_lr=0.1, adapt_keys=adapt)
    assert learner.meta_params(params).keys() == params.keys()
    got, got_loss = learner.batched_meta_grad_and_loss(split_loss, params, support, query)
    want, want_loss = maml.batched_meta_grad_and_loss(split_loss, params, support, query)
    assert rel_err(got, want) < 1e-12
    assert torch.allclose(got_loss, want_loss, rtol=1e-12, atol=0)
    adapted = learner.batched_adapt(split_loss, params, support)
    assert rel_err(adapted, maml.batched_adapt(split_loss, params, support)) < 1e-12


@pytest.mark.parametrize(("steps", "iteration"), [(1, 1), (3, 1), (4, 40), (5, 200)])
def test_the_multi_step_loss_is_the_weighted_sum_of_per_step_maml_gradients(steps, iteration):
    theta, support, query = _quadratic(8, seed=steps)
    learner = mamlpp(steps, inner_lr=0.07, multi_step_loss=True, msl_iterations=100)
    learner.set_iteration(iteration)
    weights = learner.step_weights()
    got = learner.meta_grad(quadratic_loss, {"w": theta}, support, query)
    want, _ = closed_form(theta, [0.07] * steps, weights, support, query)
    assert rel_err(got, {"w": want}) <= TOL
    per_step = [
        make("maml", steps=j, inner_lr=0.07).meta_grad(quadratic_loss, {"w": theta}, support, query)
        for j in range(1, steps + 1)
    ]
    assert (
        rel_err(got, {"w": sum(w * g["w"] for w, g in zip(weights, per_step, strict=True))}) <= TOL
    )


def test_the_loss_weights_follow_maml_plus_plus_schedule():
    learner = mamlpp(5, multi_step_loss=True, msl_iterations=100)
    at = lambda t: (learner.set_iteration(t), learner.step_weights())[1]  # noqa: E731
    assert at(0) == at(1) == pytest.approx([0.2] * 5)  # uniform before any update
    half = at(51)  # 50 done: each early weight 0.2 - 50 * 0.2 / 100 = 0.1, the final 0.6
    assert half == pytest.approx([0.1] * 4 + [0.6])
    assert at(100)[:4] == pytest.approx([0.03 / 5] * 4)  # the floor, the final 1 - 4 * 0.006
    assert at(100)[4] == pytest.approx(1 - 4 * 0.006)
    assert at(101) == [0.0] * 4 + [1.0]  # msl_iterations done: the final step's loss alone
    for t in (1, 30, 77, 100):
        assert sum(at(t)) == pytest.approx(1.0)
    assert mamlpp(5).step_weights() == [0.0] * 4 + [1.0]  # multi_step_loss off


@pytest.mark.parametrize("multi_step_loss", [False, True])
@pytest.mark.parametrize("steps", [1, 3, 6])
def test_per_step_step_sizes_match_their_closed_form(steps, multi_step_loss):
    theta, support, query = _quadratic(7, seed=10 + steps)
    learner = mamlpp(steps, inner_lr=0.05, per_step_lr=True, multi_step_loss=multi_step_loss)
    learner.set_iteration(3)
    params = learner.meta_params({"w": theta})
    assert set(params) == {"w", *(f"{LR}{j}/w" for j in range(steps))}
    assert all(params[f"{LR}{j}/w"].item() == 0.05 for j in range(steps))
    alphas = [0.02 + 0.03 * j for j in range(steps)]  # unequal, as after meta-training
    params |= {f"{LR}{j}/w": torch.tensor(alpha, dtype=DT) for j, alpha in enumerate(alphas)}
    got = learner.meta_grad(quadratic_loss, params, support, query)
    g_theta, g_alpha = closed_form(theta, alphas, learner.step_weights(), support, query)
    want = {"w": g_theta, **{f"{LR}{j}/w": g for j, g in enumerate(g_alpha)}}
    assert got.keys() == want.keys()
    assert rel_err(got, want) <= TOL


def test_the_first_order_phase_is_fomamls_direction_and_then_mamls():
    split_loss, _, params, support, query = _problem("mlp")
    learner = mamlpp(3, first_order_until=10)
    fomaml = make("fomaml", steps=3, inner_lr=0.1)
    maml = make("maml", steps=3, inner_lr=0.1)
    for iteration, reference in [(1, fomaml), (10, fomaml), (11, maml), (0, maml)]:
        learner.set_iteration(iteration)
        got = learner.batched_meta_grad(split_loss, params, support, query)
        want = reference.batched_meta_grad(split_loss, params, support, query)
        assert rel_err(got, want) < 1e-12, iteration
    assert (
        rel_err(
            fomaml.batched_meta_grad(split_loss, params, support, query),
            maml.batched_meta_grad(split_loss, params, support, query),
        )
        > 1e-3
    )  # the two differ here: the test can tell them apart


def _bn_reference(loss_fn, params, support, query, steps, weights):
    """MAML++ with per-step batch norm and step sizes, unrolled by hand with ``torch.autograd``
    (create_graph): the meta-gradient on every entry of ``params``."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    model = {k: v for k, v in leaves.items() if not k.startswith((LR, BN))}
    norms = [k for k in model if ".norm." in k]
    fast = {k: v for k, v in model.items() if k not in norms}

    def at_step(fast, j):  # the model at u_j: batch-norm set j (set 0: the model's own)
        held = {k: leaves[f"{BN}{j}/{k}"] if j else model[k] for k in norms}
        return {**fast, **held}

    total = torch.zeros((), dtype=DT)
    for j in range(steps):
        loss = loss_fn(at_step(fast, j), support)
        grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
        fast = {
            k: v - leaves[f"{LR}{j}/{k}"] * g for (k, v), g in zip(fast.items(), grads, strict=True)
        }
        total = total + weights[j] * loss_fn(at_step(fast, j + 1), query)
    found = torch.autograd.grad(total, list(leaves.values()))
    return dict(zip(leaves, found, strict=True))


def test_per_step_batch_norm_matches_an_unrolled_autograd_reference_on_the_conv4():
    split_loss, _, params, support, query = _problem("conv4")
    steps = 3
    learner = mamlpp(steps, per_step_lr=True, per_step_bn=True, multi_step_loss=True)
    learner.set_iteration(7)
    packed = learner.meta_params(params)
    bn_keys = {f"{BN}{j}/{k}" for j in range(1, steps + 1) for k in params if ".norm." in k}
    assert bn_keys <= packed.keys() and len(bn_keys) == 8 * steps
    gen = torch.Generator().manual_seed(4)
    packed = {  # distinct sets and step sizes, as after meta-training
        k: v + 0.05 * torch.rand(v.shape, generator=gen, dtype=DT)
        if k.startswith((LR, BN)) else v
        for k, v in packed.items()
    }  # fmt: skip
    task = lambda batch: tuple(t[0] for t in batch)  # noqa: E731  (the first task)
    got, loss = learner.meta_grad_and_loss(split_loss, packed, task(support), task(query))
    want = _bn_reference(
        split_loss, packed, task(support), task(query), steps, learner.step_weights()
    )
    assert got.keys() == want.keys()
    assert all(want[k].abs().sum() > 0 for k in bn_keys)  # every set reaches the meta-loss
    assert rel_err(got, want) < 1e-11
    adapted = learner.adapt(split_loss, packed, task(support))
    assert adapted.keys() == params.keys()  # the model's own keys: set K in the norms' place
    for k in params:
        if ".norm." in k:
            assert torch.equal(adapted[k], packed[f"{BN}{steps}/{k}"])
    assert torch.allclose(loss, split_loss(adapted, task(query)), rtol=1e-12, atol=0)


def test_per_step_batch_norm_leaves_a_model_without_batch_norm_on_the_head_split():
    split_loss, whole_loss, params, support, query = _problem("mlp")
    learner = mamlpp(3, adapt=("head",), per_step_bn=True, per_step_lr=True, multi_step_loss=True)
    packed = learner.meta_params(params)
    assert not any(k.startswith(BN) for k in packed)
    assert {k for k in packed if k.startswith(LR)} == {
        f"{LR}{j}/head.{p}" for j in range(3) for p in ("weight", "bias")
    }
    got, _ = learner.batched_meta_grad_and_loss(split_loss, packed, support, query)
    want, _ = learner.batched_meta_grad_and_loss(whole_loss, packed, support, query)
    assert rel_err(got, want) < 1e-11


def test_options_are_checked():
    with pytest.raises(ValueError, match="msl_iterations=0 is invalid"):
        mamlpp(3, msl_iterations=0)
    with pytest.raises(ValueError, match="first_order_until=-1 is invalid"):
        mamlpp(3, first_order_until=-1)


def test_the_meta_gradient_is_detached():
    theta, support, query = _quadratic(4, seed=0)
    learner = mamlpp(2, per_step_lr=True, multi_step_loss=True)
    grads = learner.meta_grad(quadratic_loss, learner.meta_params({"w": theta}), support, query)
    assert not any(g.requires_grad for g in grads.values())


def test_meta_test_beyond_the_trained_steps_repeats_the_last_learned_step():
    split_loss, _, params, support, query = _problem("conv4")
    options = {"per_step_lr": True, "per_step_bn": True}
    gen = torch.Generator().manual_seed(9)
    trained = {
        k: v + 0.05 * torch.rand(v.shape, generator=gen, dtype=DT)
        if k.startswith((LR, BN)) else v
        for k, v in mamlpp(2, **options).meta_params(params).items()
    }  # fmt: skip
    spelled_out = dict(trained)  # steps 2 and 3 with step 1's sizes, sets 3 and 4 with set 2
    for k in params:
        for j in (2, 3):
            if f"{LR}1/{k}" in trained:
                spelled_out[f"{LR}{j}/{k}"] = trained[f"{LR}1/{k}"]
        for j in (3, 4):
            if f"{BN}2/{k}" in trained:
                spelled_out[f"{BN}{j}/{k}"] = trained[f"{BN}2/{k}"]
    longer = mamlpp(4, **options)
    got = longer.batched_adapt(split_loss, trained, support)
    want = longer.batched_adapt(split_loss, spelled_out, support)
    assert rel_err(got, want) < 1e-14
    shorter = mamlpp(2, **options).batched_adapt(split_loss, trained, support)
    assert rel_err(got, shorter) > 1e-6  # the two extra steps moved the parameters
