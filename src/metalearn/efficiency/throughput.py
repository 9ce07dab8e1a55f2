"""Throughput against peers: meta-training steps per second of every learner as ours (the
batched path), a hand-written ``torch.func`` reference and each peer library that computes it
(:mod:`metalearn.efficiency.references`), after checking in float64 that their meta-gradients
agree (:func:`peers`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from metalearn.efficiency.problems import Problem, _pair, first_iteration, make_problem
from metalearn.efficiency.references import PEERS, REFERENCED, reference
from metalearn.functional import Params

#: The learners compared, with their options as params.yaml's (the adjoint's trajectory and
#: scheme, iMAML's lambda and CG steps, MAML++'s tricks are the defaults there and in the
#: references).
LEARNERS = REFERENCED
OURS, REFERENCE = "ours", "reference (vmap(grad))"


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


def forms(
    problem: Problem, learner: str, steps: int, inner_lr: float
) -> dict[str, Callable[[], Params]]:
    """``learner``'s mean meta-gradient on ``problem`` as ours, the hand-written reference and
    each installed peer that computes it (``pip install -e '.[bench]'``: higher, torchopt)."""
    ours, params = first_iteration(learner, problem, steps, inner_lr)
    pair = _pair(problem)
    found: dict[str, Callable[[], Params]] = {
        OURS: lambda: ours.batched_meta_grad_and_loss(problem.loss_fn, params, *pair)[0],
        REFERENCE: lambda: reference(learner, problem, steps, inner_lr),
    }
    for name, peer in PEERS.get(learner, {}).items():
        try:
            __import__(name.split()[0].split(".")[0])
        except ImportError:  # an optional peer that is not installed
            continue
        found[name] = lambda peer=peer: peer(problem, steps, inner_lr)
    return found


def peers(
    problem_name: str,
    meta_batch: int,
    steps: int,
    learners: tuple[str, ...] = LEARNERS,
    inner_lr: float = 0.01,
    seconds: float = 5.0,
    device: str = "cpu",
    tolerance: float = 1e-10,
    rounds: int = 3,
    check_meta_batch: int = 2,
) -> list[dict[str, Any]]:
    """Meta-training steps per second (meta-gradient + an Adam step) of each learner as ours,
    the reference and its peers, on identical model, tasks and float32 numerics. First checks,
    in float64 on ``check_meta_batch`` tasks, that every form's meta-gradient agrees with ours
    to ``tolerance`` (raises otherwise): float32 round-off through batch norm over 5 images
    reaches 1e-3 and would hide a real difference.

    Each form is timed for ``seconds`` in all, in ``rounds`` interleaved rounds, and its best
    round counts: a burst of load from other processes slows one round of each form alike
    instead of one form's whole measurement. ``ours_over`` is ours' rate over the form's (above
    1: ours is faster)."""
    exact = make_problem(problem_name, check_meta_batch, dtype=torch.float64, device=device)
    problem = make_problem(problem_name, meta_batch, device=device)
    rows = []
    for learner in learners:
        grads = {name: form() for name, form in forms(exact, learner, steps, inner_lr).items()}
        diffs = {name: max_rel_diff(g, grads[OURS]) for name, g in grads.items()}
        for name, diff in diffs.items():
            if not diff < tolerance:
                raise RuntimeError(
                    f"{learner}, {name}: meta-gradient differs from ours by {diff:.2e}"
                )
        _, learned = first_iteration(learner, problem, steps, inner_lr)  # the learner's own too
        training_steps = {
            name: _training_step(form, learned)
            for name, form in forms(problem, learner, steps, inner_lr).items()
        }
        for step in training_steps.values():
            step()  # warm-up
        rate = dict.fromkeys(training_steps, 0.0)
        for _ in range(rounds):
            for name, step in training_steps.items():
                measured = steps_per_second(step, seconds / rounds, least=1, warm_up=False)
                rate[name] = max(rate[name], measured)
        rows += [
            {
                "problem": problem_name,
                "learner": learner,
                "implementation": name,
                "meta_batch": meta_batch,
                "steps": steps,
                "steps_per_s": rate[name],
                "ours_over": rate[OURS] / rate[name],
                "max_rel_diff_float64": diffs[name],
            }
            for name in training_steps
        ]
    return rows
