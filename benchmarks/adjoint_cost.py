"""Adjoint MAML's cost against iMAML's at equal K, with each Hessian-vector product taken
afresh (forward-over-reverse, ``functional.hvp``: the code before the linearisation) and with
each state linearised once (``functional.hvp_at``: Heun's two products at a state, iMAML's CG
products at phi, from one graph). One process, interleaved rounds, best round counts::

    .venv/bin/python benchmarks/adjoint_cost.py [--rounds 3] [--steps 10 50 100]

Prints, per problem and K, the seconds of one batched meta-gradient (the efficiency stage's
problems: CF MLP with 16 tasks, Conv4 5-way 1-shot with 2), Adjoint/iMAML before and after, and
the largest relative difference of the two forms' meta-gradients in float64. Then the unit
costs that bound the ratio (one batched call each, in multiples of one gradient): a gradient, a
linearisation (``hvp_at``: the gradient with its graph), one product through it, and one
forward-over-reverse product (``hvp``). Heun takes K linearisations and 2K products on top of
the K gradients of the forward pass (and ~K more to recompute a checkpointed trajectory); iMAML
takes K gradients, one linearisation and cg_steps + 1 products.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from metalearn import functional as F
from metalearn.algorithms import make
from metalearn.efficiency.problems import make_problem

LEARNERS = {
    "imaml": {"lam": 2.0, "cg_steps": 5},
    "adjoint": {"scheme": "heun", "trajectory": "checkpoint"},  # params.yaml's
}
META_BATCH = {"cf_mlp": 16, "omniglot_conv4": 2}
linearised = F.hvp_at


@contextlib.contextmanager
def products_afresh():
    """Every product by forward-over-reverse, as before the linearisation."""
    F.hvp_at = lambda loss_fn, fast, slow, batch: lambda v: F.hvp(loss_fn, fast, slow, batch, v)
    try:
        yield
    finally:
        F.hvp_at = linearised


def meta_grad(problem, learner: str, steps: int):
    m = make(learner, steps=steps, inner_lr=0.01, **LEARNERS[learner])
    return m.batched_meta_grad_and_loss(
        problem.loss_fn, problem.params, problem.support, problem.query
    )[0]


def max_rel_diff(a, b) -> float:
    scale = max(float(v.abs().max()) for v in b.values())
    return max(float((a[k] - b[k]).abs().max()) for k in b) / scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--problems", nargs="+", default=list(META_BATCH))
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.problems:
        for steps in args.steps:
            exact = make_problem(name, 2, dtype=torch.float64)
            diffs = {}
            for learner in LEARNERS:
                with products_afresh():
                    before = meta_grad(exact, learner, steps)
                diffs[learner] = max_rel_diff(meta_grad(exact, learner, steps), before)
            problem = make_problem(name, META_BATCH[name])
            best: dict[tuple[str, str], float] = {}
            for _ in range(args.rounds):
                for form in ("before", "after"):
                    for learner in LEARNERS:
                        ctx = products_afresh() if form == "before" else contextlib.nullcontext()
                        with ctx:
                            start = time.perf_counter()
                            meta_grad(problem, learner, steps)
                            took = time.perf_counter() - start
                        key = (form, learner)
                        best[key] = min(best.get(key, float("inf")), took)
            ratio = {f: best[(f, "adjoint")] / best[(f, "imaml")] for f in ("before", "after")}
            print(
                f"{name} K={steps}: imaml {best[('before', 'imaml')]:.3f} -> "
                f"{best[('after', 'imaml')]:.3f} s, adjoint {best[('before', 'adjoint')]:.3f} -> "
                f"{best[('after', 'adjoint')]:.3f} s; adjoint/imaml {ratio['before']:.2f} -> "
                f"{ratio['after']:.2f}; float64 max rel diff imaml {diffs['imaml']:.1e}, "
                f"adjoint {diffs['adjoint']:.1e}",
                flush=True,
            )
        costs = unit_costs(name, args.rounds)
        print(
            f"{name} unit costs (x one gradient, {costs.pop('gradient_s') * 1e3:.2f} ms):",
            ", ".join(f"{k} {v:.2f}" for k, v in costs.items()),
            flush=True,
        )


def unit_costs(name: str, rounds: int) -> dict[str, float]:
    """Seconds of one batched gradient, linearisation, product and hvp, over gradient's."""
    problem = make_problem(name, META_BATCH[name])
    loss_fn, params = problem.loss_fn, problem.params
    v = {k: torch.ones_like(t) for k, t in params.items()}

    def batched(fn):
        return lambda: torch.func.vmap(fn)(*problem.support)

    def linearise(x, y):
        return F.hvp_at(loss_fn, params, {}, (x, y))

    forms = {
        "gradient": batched(lambda x, y: torch.func.grad(loss_fn)(params, (x, y))),
        "linearisation": batched(lambda x, y: linearise(x, y) and x.sum()),
        "linearisation + 1 product": batched(lambda x, y: linearise(x, y)(v)),
        "hvp (forward-over-reverse)": batched(lambda x, y: F.hvp(loss_fn, params, {}, (x, y), v)),
    }
    best = {k: float("inf") for k in forms}
    for _ in range(rounds):
        for key, form in forms.items():
            start = time.perf_counter()
            for _ in range(20):
                form()
            best[key] = min(best[key], (time.perf_counter() - start) / 20)
    return {k: t / best["gradient"] for k, t in best.items()} | {"gradient_s": best["gradient"]}


if __name__ == "__main__":
    main()
