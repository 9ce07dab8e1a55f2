"""Throughput against a peer library: meta-training steps per second of MAML as our batched
path, our per-task loop and ``higher`` (:func:`peers`), after checking in float64 that their
meta-gradients agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from metalearn.algorithms import make
from metalearn.efficiency.problems import Problem, _pair, make_problem
from metalearn.functional import Params


def higher_maml_grad(problem: Problem, steps: int, inner_lr: float) -> Params:
    """MAML's mean meta-gradient computed with ``higher`` (one task at a time, as it works):
    the peer reference. Needs the optional ``higher`` package."""
    import higher

    model = problem.model
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(problem.params[name])
    model.zero_grad()
    opt = torch.optim.SGD(model.parameters(), lr=inner_lr)
    n = problem.support[0].shape[0]
    for i in range(n):
        support = tuple(t[i] for t in problem.support)
        query = tuple(t[i] for t in problem.query)
        with higher.innerloop_ctx(model, opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(_module_loss(problem, fmodel, support))
            (_module_loss(problem, fmodel, query) / n).backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def _module_loss(problem: Problem, module: Callable, batch: tuple[Tensor, Tensor]) -> Tensor:
    """The problem's loss through a module call (``higher``'s functional model)."""
    x, y = batch
    out = module(x)
    if y.is_floating_point():
        return (out.squeeze(-1) - y).square().mean()
    return nn.functional.cross_entropy(out, y)


def steps_per_second(
    step: Callable[[], Any], seconds: float = 5.0, least: int = 2, warm_up: bool = True
) -> float:
    """Meta-training steps per second of ``step`` (after one warm-up call unless ``warm_up`` is
    false), over about ``seconds`` of wall time and at least ``least`` calls."""
    if warm_up:
        step()
    calls, start = 0, time.perf_counter()
    while calls < least or time.perf_counter() - start < seconds:
        step()
        calls += 1
    return calls / (time.perf_counter() - start)


def max_rel_diff(a: Params, b: Params) -> float:
    """``max_k max|a_k - b_k| / max_k max|b_k|``: one scale for all tensors."""
    scale = max(float(v.abs().max()) for v in b.values()) or 1e-30
    return max(float((a[k] - b[k]).abs().max()) for k in b) / scale


def _training_step(form: Callable[[], Params], theta: Params) -> Callable[[], None]:
    """One meta-training step: the meta-gradient ``form()`` and an Adam update of a copy of
    ``theta`` (the update's cost counts; the meta-gradient is always taken at ``theta``)."""
    params = {k: nn.Parameter(v.clone()) for k, v in theta.items()}
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)

    def step() -> None:
        for k, g in form().items():
            params[k].grad = g
        optimizer.step()

    return step


def maml_forms(problem: Problem, steps: int, inner_lr: float) -> dict[str, Callable[[], Params]]:
    """MAML's mean meta-gradient on ``problem`` three ways: our batched path, our per-task loop
    and ``higher`` (when installed: ``pip install -e '.[bench]'``)."""
    learner = make("maml", steps=steps, inner_lr=inner_lr)
    pair = _pair(problem)
    forms: dict[str, Callable[[], Params]] = {
        "ours, batched (vmap)": lambda: learner.batched_meta_grad_and_loss(
            problem.loss_fn, problem.params, *pair
        )[0],
        "ours, per-task loop": lambda: learner.looped_meta_grad_and_loss(
            problem.loss_fn, problem.params, *pair
        )[0],
    }
    try:
        import higher  # noqa: F401 - optional

        forms["higher"] = lambda: higher_maml_grad(problem, steps, inner_lr)
    except ImportError:
        pass
    return forms


def peers(
    problem_name: str,
    meta_batch: int,
    steps: int,
    inner_lr: float = 0.01,
    seconds: float = 5.0,
    device: str = "cpu",
    tolerance: float = 1e-10,
    rounds: int = 3,
) -> list[dict[str, Any]]:
    """Meta-training steps per second (meta-gradient + an Adam step) of MAML as our batched
    path, our per-task loop and ``higher``, on identical model, tasks and float32 numerics.
    First checks, in float64 on the same tasks, that the meta-gradients agree to ``tolerance``
    (raises otherwise): float32 round-off through batch norm over 5 images reaches 1e-3 and
    would hide a real difference.

    Each implementation is timed for ``seconds`` in all, in ``rounds`` interleaved rounds, and
    its best round counts: a burst of load from other processes slows one round of each
    implementation alike instead of one implementation's whole measurement."""
    exact = {
        name: form()
        for name, form in maml_forms(
            make_problem(problem_name, meta_batch, dtype=torch.float64), steps, inner_lr
        ).items()
    }
    reference = exact["ours, per-task loop"]
    diffs = {name: max_rel_diff(grads, reference) for name, grads in exact.items()}
    for name, diff in diffs.items():
        if not diff < tolerance:
            raise RuntimeError(f"{name}: meta-gradient differs from the loop's by {diff:.2e}")
    problem = make_problem(problem_name, meta_batch, device=device)
    training_steps = {
        name: _training_step(form, problem.params)
        for name, form in maml_forms(problem, steps, inner_lr).items()
    }
    for step in training_steps.values():
        step()  # warm-up
    rate = dict.fromkeys(training_steps, 0.0)
    for _ in range(rounds):
        for name, step in training_steps.items():
            measured = steps_per_second(step, seconds / rounds, least=1, warm_up=False)
            rate[name] = max(rate[name], measured)
    return [
        {
            "problem": problem_name,
            "implementation": name,
            "meta_batch": meta_batch,
            "steps": steps,
            "steps_per_s": rate[name],
            "max_rel_diff_float64": diffs[name],
        }
        for name in training_steps
    ]
