"""Accuracy of the meta-gradients: each variant's mean meta-gradient against exact MAML's (the
gradient of the same K-step loop) on the same meta-batch, as relative error and cosine
similarity, per problem and K.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from metalearn.algorithms import make
from metalearn.efficiency.problems import Problem, _pair, first_iteration, make_problem
from metalearn.functional import Params


def accuracy(problem: Problem, steps: int, variants: dict[str, dict[str, Any]]) -> dict:
    """Relative error and cosine similarity of each variant's mean meta-gradient against MAML's
    (the exact gradient of the K-step loop) on the same meta-batch: ``{variant: (err, cos)}``.
    Only the model's parameters compare: a learner's own (Meta-SGD's step sizes) have no
    counterpart in MAML."""
    exact = make("maml", steps=steps, inner_lr=0.01).batched_meta_grad(
        problem.loss_fn, problem.params, *_pair(problem)
    )
    ref = _flat(exact, problem.params)
    out = {}
    for name, spec in variants.items():
        options = dict(spec)
        learner, params = first_iteration(options.pop("learner"), problem, steps, **options)
        grads = learner.batched_meta_grad(problem.loss_fn, params, *_pair(problem))
        vec = _flat(grads, problem.params)
        err = float((vec - ref).norm() / ref.norm())
        cos = float(vec @ ref / (vec.norm() * ref.norm()).clamp_min(1e-300))
        out[name] = (err, cos)
    return out


def accuracy_sweep(
    problems: dict[str, int],
    steps: list[int],
    variants: dict[str, dict[str, Any]],
    dtype: torch.dtype = torch.float64,
) -> list[dict[str, Any]]:
    """:func:`accuracy` for every problem (name -> meta-batch) and K, in ``dtype`` (float64: the
    errors are the methods', not round-off). Where exact MAML does not fit in memory the row's
    error is NaN with ``status`` ``maml out of memory``."""
    rows = []
    for problem_name, meta_batch in problems.items():
        problem = make_problem(problem_name, meta_batch, dtype=dtype)
        for k in steps:
            try:
                found = accuracy(problem, k, variants)
                status = "ok"
            except (MemoryError, RuntimeError) as error:
                if not isinstance(error, MemoryError) and "allocate" not in str(error):
                    raise
                found, status = {v: (math.nan, math.nan) for v in variants}, "maml out of memory"
            for variant, (err, cos) in found.items():
                rows.append(
                    {"problem": problem_name, "steps": k, "variant": variant,
                     "rel_err": err, "cosine": cos, "status": status}
                )  # fmt: skip
    return rows


def _flat(grads: Params, keys: Params) -> Tensor:
    """``grads`` of the model's ``keys`` as one vector, in their order."""
    return torch.cat([grads[k].reshape(-1) for k in keys])
