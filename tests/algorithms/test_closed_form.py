"""Every learner against its closed form on quadratic tasks (float64, relative error <= 1e-8).

L_s(u) = 1/2 (u - c)^T A (u - c), L_q(u) = 1/2 (u - d)^T B (u - d), u_K = K GD steps from theta.
"""

import pytest
import torch

from metalearn.algorithms import make
from tests.algorithms.problems import DT, quadratic_loss, quadratic_task, rel_err

TOL = 1e-8
CASES = [(10, 1, 0.1), (12, 7, 0.05), (16, 25, 0.2), (10, 60, 0.1)]  # (dimension, K, alpha)


def closed_forms(n, steps, alpha, seed):
    gen = torch.Generator().manual_seed(seed)
    (a, c), (b, d) = support, query = quadratic_task(n, gen)
    theta = torch.randn(n, generator=gen, dtype=DT)
    eye = torch.eye(n, dtype=DT)
    u = theta.clone()
    for _ in range(steps):
        u = u - alpha * a @ (u - c)
    query_grad = b @ (u - d)
    power = torch.linalg.matrix_power
    forms = {
        "maml": power(eye - alpha * a, steps) @ query_grad,
        "fomaml": query_grad,
        "reptile": theta - u,
        "heun": power(eye - alpha * a + alpha**2 * a @ a / 2, steps) @ query_grad,
    }
    return {"w": theta}, support, query, forms


LEARNERS = [
    ("maml", {}, "maml"),
    ("fomaml", {}, "fomaml"),
    ("reptile", {}, "reptile"),
    ("adjoint", {"scheme": "euler", "trajectory": "store"}, "maml"),
    ("adjoint", {"scheme": "euler", "trajectory": "checkpoint"}, "maml"),
    ("adjoint", {"scheme": "heun", "trajectory": "store"}, "heun"),
    ("adjoint", {"scheme": "heun", "trajectory": "checkpoint", "checkpoint_every": 3}, "heun"),
]


@pytest.mark.parametrize(("n", "steps", "alpha"), CASES)
@pytest.mark.parametrize(("name", "options", "form"), LEARNERS)
def test_learner_matches_closed_form(name, options, form, n, steps, alpha):
    params, support, query, forms = closed_forms(n, steps, alpha, seed=steps)
    grads = make(name, steps=steps, inner_lr=alpha, **options).meta_grad(
        quadratic_loss, params, support, query
    )
    assert rel_err(grads, {"w": forms[form]}) <= TOL


@pytest.mark.parametrize(("n", "steps", "alpha"), CASES[:2])
def test_heun_differs_from_maml(n, steps, alpha):
    """The two adjoint schemes are distinct methods: a check that the heun test can fail."""
    _, _, _, forms = closed_forms(n, steps, alpha, seed=steps)
    assert rel_err({"w": forms["heun"]}, {"w": forms["maml"]}) > 1e-4


@pytest.mark.parametrize(("lam", "seed"), [(2.0, 0), (0.5, 1), (10.0, 2)])
def test_imaml_matches_implicit_gradient(lam, seed):
    """iMAML: g = (I + A/lam)^{-1} B (phi* - d), phi* = (A + lam I)^{-1} (A c + lam theta).

    The inner loop contracts by at most rho = 1 - alpha (lam + 0.5) per step (eig A >= 0.5), so
    600 steps leave ||phi_K - phi*|| <= rho^600 ||theta - phi*|| < 1e-13 relative, and 40 CG
    iterations solve the n=12 system exactly up to round-off: tolerance 1e-8 holds with margin.
    """
    n, alpha = 12, 0.05
    gen = torch.Generator().manual_seed(seed)
    (a, c), (b, d) = support, query = quadratic_task(n, gen)
    theta = torch.randn(n, generator=gen, dtype=DT)
    eye = torch.eye(n, dtype=DT)
    phi = torch.linalg.solve(a + lam * eye, a @ c + lam * theta)
    expected = torch.linalg.solve(eye + a / lam, b @ (phi - d))
    learner = make("imaml", steps=600, inner_lr=alpha, lam=lam, cg_steps=40)
    grads = learner.meta_grad(quadratic_loss, {"w": theta}, support, query)
    assert rel_err(grads, {"w": expected}) <= TOL
    adapted = learner.adapt(quadratic_loss, {"w": theta}, support)
    assert rel_err(adapted, {"w": phi}) <= 1e-10


def test_imaml_with_few_cg_steps_is_inexact():
    """One CG step is not the solution: the tolerance above is earned, not vacuous."""
    n = 12
    gen = torch.Generator().manual_seed(0)
    (a, c), (b, d) = support, query = quadratic_task(n, gen)
    theta = torch.randn(n, generator=gen, dtype=DT)
    eye = torch.eye(n, dtype=DT)
    phi = torch.linalg.solve(a + 2 * eye, a @ c + 2 * theta)
    expected = torch.linalg.solve(eye + a / 2, b @ (phi - d))
    grads = make("imaml", steps=600, inner_lr=0.05, lam=2.0, cg_steps=1).meta_grad(
        quadratic_loss, {"w": theta}, support, query
    )
    assert rel_err(grads, {"w": expected}) > 1e-3
