"""Every learner's mean meta-gradient written independently of ``metalearn.algorithms``: a
hand-written ``torch.func`` reference (``vmap`` over tasks of ``grad``, the plainest form of each
method) and the peer libraries' own ways (``higher``'s module loop, torchopt's functional
optimiser under ``vmap``, ``torchopt.diff.implicit``). The throughput measurement
(:mod:`metalearn.efficiency.throughput`) checks them equal to ours in float64, then times them.

All adapt every parameter (no head split) with K plain gradient steps of size ``inner_lr``;
iMAML minimises ``L_s(phi) + lam/2 ||phi - theta||^2`` and solves with ``cg_steps`` conjugate
gradient steps; Adjoint MAML integrates the adjoint backwards with Heun's scheme over stored
states. Meta-SGD and MAML++ start their own parameters where meta-training does (step sizes at
``inner_lr``, MAML++'s batch-norm sets as copies of the model's) and differentiate them too;
MAML++ runs its defaults at the first meta-iteration: the mean of the K query losses, a step
size per step and tensor, and on the Conv4 batch-norm set ``j`` for the model at ``u_j``. Each
returns ``{name: mean over tasks of the task's meta-gradient}``, named as the learner names them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from metalearn.efficiency.problems import Problem
from metalearn.functional import Params

IMAML_LAM, IMAML_CG = 2.0, 5  # the learner's defaults (params.yaml's algo.imaml)


def _sgd(loss_fn: Callable, theta: Params, batch: Any, steps: int, lr: float) -> Params:
    u = theta
    for _ in range(steps):
        g = torch.func.grad(loss_fn)(u, batch)
        u = {k: u[k] - lr * g[k] for k in u}
    return u


def _mean_over_tasks(task_grad: Callable, problem: Problem) -> Params:
    grads = torch.func.vmap(task_grad)(problem.support, problem.query)
    return {k: g.mean(0) for k, g in grads.items()}


def _hvp(loss_fn: Callable, u: Params, batch: Any, v: Params) -> Params:
    return torch.func.jvp(lambda p: torch.func.grad(loss_fn)(p, batch), (u,), (v,))[1]


#: The learners with a hand-written reference here (the peer table compares ours with it).
REFERENCED = ("maml", "fomaml", "reptile", "imaml", "adjoint", "metasgd", "mamlpp")


def reference(learner: str, problem: Problem, steps: int, lr: float) -> Params:
    """The hand-written ``vmap(grad)`` meta-gradient of ``learner``."""
    loss, theta = problem.loss_fn, problem.params

    def maml(s: Any, q: Any) -> Params:
        return torch.func.grad(lambda th: loss(_sgd(loss, th, s, steps, lr), q))(theta)

    def fomaml(s: Any, q: Any) -> Params:
        return torch.func.grad(loss)(_sgd(loss, theta, s, steps, lr), q)

    def reptile(s: Any, q: Any) -> Params:
        u = _sgd(loss, theta, s, steps, lr)
        return {k: theta[k] - u[k] for k in theta}

    def imaml(s: Any, q: Any) -> Params:
        def prox(p: Params) -> Tensor:
            return loss(p, s) + IMAML_LAM / 2 * sum((p[k] - theta[k]).square().sum() for k in p)

        phi = _prox_sgd(prox, theta, steps, lr)
        b = torch.func.grad(loss)(phi, q)
        x = {k: torch.zeros_like(v) for k, v in b.items()}
        r, p = dict(b), dict(b)
        rr = _dot(r, r)
        for _ in range(IMAML_CG):  # CG on (I + H/lam) x = b
            hp = _hvp(loss, phi, s, p)
            ap = {k: p[k] + hp[k] / IMAML_LAM for k in p}
            alpha = _ratio(rr, _dot(p, ap))
            x = {k: x[k] + alpha * p[k] for k in x}
            r = {k: r[k] - alpha * ap[k] for k in r}
            rr_next = _dot(r, r)
            p = {k: r[k] + _ratio(rr_next, rr) * p[k] for k in p}
            rr = rr_next
        return x

    def adjoint(s: Any, q: Any) -> Params:
        states = [theta]
        for _ in range(steps):
            g = torch.func.grad(loss)(states[-1], s)
            states.append({k: states[-1][k] - lr * g[k] for k in g})
        lam = torch.func.grad(loss)(states[-1], q)
        for j in reversed(range(steps)):  # Heun, from u_{j+1} back to u_j
            h_next = _hvp(loss, states[j + 1], s, lam)
            tilde = {k: lam[k] - lr * h_next[k] for k in lam}
            h = _hvp(loss, states[j], s, tilde)
            lam = {k: lam[k] - lr / 2 * (h_next[k] + h[k]) for k in lam}
        return lam

    if learner == "metasgd":
        return _metasgd(problem, steps, lr)
    if learner == "mamlpp":
        return _mamlpp(problem, steps, lr)
    forms = {"maml": maml, "fomaml": fomaml, "reptile": reptile, "imaml": imaml}
    return _mean_over_tasks({**forms, "adjoint": adjoint}[learner], problem)


def _metasgd(problem: Problem, steps: int, lr: float) -> Params:
    """Meta-SGD: MAML with a step size per parameter entry, ``alpha`` (all at ``lr``), and the
    meta-gradient over theta and alpha."""
    loss, theta = problem.loss_fn, problem.params
    alpha = {k: torch.full_like(v, lr) for k, v in theta.items()}

    def query_loss(th: Params, al: Params, s: Any, q: Any) -> Tensor:
        u = th
        for _ in range(steps):
            g = torch.func.grad(loss)(u, s)
            u = {k: u[k] - al[k] * g[k] for k in u}
        return loss(u, q)

    def task(s: Any, q: Any) -> Params:
        g_theta, g_alpha = torch.func.grad(query_loss, argnums=(0, 1))(theta, alpha, s, q)
        return {**g_theta, **{f"inner_lr/{k}": g for k, g in g_alpha.items()}}

    return _mean_over_tasks(task, problem)


def _mamlpp(problem: Problem, steps: int, lr: float) -> Params:
    """MAML++ at its first meta-iteration: ``(1/K) sum_j L_q(u_j)``, ``u_{j+1} = u_j -
    alpha_{j,k} grad L_s(u_j)`` with a step size per step and tensor, and the model at ``u_j``
    normalising with batch-norm set ``j`` (set 0 the model's own; the sets are never adapted)."""
    loss, theta = problem.loss_fn, problem.params
    norms = _batch_norm_keys(problem.model)
    adapted = [k for k in theta if k not in norms]
    meta = dict(theta)
    for j in range(steps):
        meta |= {f"inner_lr/{j}/{k}": theta[k].new_full((), lr) for k in adapted}
    for j in range(1, steps + 1):
        meta |= {f"bn/{j}/{k}": theta[k].clone() for k in norms}

    def at_step(p: Params, u: Params, j: int) -> Params:
        """The model at ``u_j``: the adapted ``u`` and batch-norm set ``j``."""
        own = {k: p[k] if j == 0 else p[f"bn/{j}/{k}"] for k in norms}
        return {**own, **u}

    def meta_loss(p: Params, s: Any, q: Any) -> Tensor:
        def support_loss(u: Params, j: int) -> Tensor:
            return loss(at_step(p, u, j), s)

        u, losses = {k: p[k] for k in adapted}, []
        for j in range(steps):
            g = torch.func.grad(support_loss)(u, j)
            u = {k: u[k] - p[f"inner_lr/{j}/{k}"] * g[k] for k in u}
            losses.append(loss(at_step(p, u, j + 1), q))
        return sum(losses) / steps

    return _mean_over_tasks(lambda s, q: torch.func.grad(meta_loss)(meta, s, q), problem)


def _batch_norm_keys(model: nn.Module) -> list[str]:
    """The names of ``model``'s batch-norm scales and shifts."""
    return [
        f"{name}.{key}"
        for name, module in model.named_modules()
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d)
        for key, _ in module.named_parameters(recurse=False)
    ]


def _prox_sgd(prox: Callable[[Params], Tensor], theta: Params, steps: int, lr: float) -> Params:
    u = theta
    for _ in range(steps):
        g = torch.func.grad(prox)(u)
        u = {k: u[k] - lr * g[k] for k in u}
    return u


def _dot(a: Params, b: Params) -> Tensor:
    return sum((a[k] * b[k]).sum() for k in a)


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den != 0, num / torch.where(den != 0, den, 1), 0)


# ----------------------------------------------------------------------------------- peers


def _module_loss(problem: Problem, module: Callable, batch: tuple[Tensor, Tensor]) -> Tensor:
    """The problem's loss through a module call (``higher``'s functional model)."""
    x, y = batch
    out = module(x)
    if y.is_floating_point():
        return (out.squeeze(-1) - y).square().mean()
    return nn.functional.cross_entropy(out, y)


def higher_maml(problem: Problem, steps: int, lr: float) -> Params:
    """MAML's mean meta-gradient with ``higher`` (one task at a time, as it works)."""
    import higher  # an optional peer (the bench extra), loaded where it is measured

    model = problem.model
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(problem.params[name])
    model.zero_grad()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    n = problem.support[0].shape[0]
    for i in range(n):
        support = tuple(t[i] for t in problem.support)
        query = tuple(t[i] for t in problem.query)
        with higher.innerloop_ctx(model, opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(_module_loss(problem, fmodel, support))
            (_module_loss(problem, fmodel, query) / n).backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def torchopt_maml(problem: Problem, steps: int, lr: float) -> Params:
    """MAML with torchopt's functional SGD inside ``vmap(grad)`` (its functorch example)."""
    import torchopt  # an optional peer (the bench extra), loaded where it is measured

    optimizer = torchopt.sgd(lr=lr)
    loss = problem.loss_fn

    def task(s: Any, q: Any) -> Params:
        def query_loss(theta: Params) -> Tensor:
            params, state = theta, optimizer.init(theta)
            for _ in range(steps):
                grads = torch.func.grad(loss)(params, s)
                updates, state = optimizer.update(grads, state, inplace=False)
                params = torchopt.apply_updates(params, updates, inplace=False)
            return loss(params, q)

        return torch.func.grad(query_loss)(problem.params)

    return _mean_over_tasks(task, problem)


def torchopt_imaml(problem: Problem, steps: int, lr: float) -> Params:
    """iMAML with ``torchopt.diff.implicit.custom_root`` (the stationarity of the proximal
    inner problem, solved by ``cg_steps`` CG steps), one task at a time as its examples do."""
    import torchopt  # an optional peer (the bench extra), loaded where it is measured

    loss, theta = problem.loss_fn, problem.params
    keys = list(theta)  # torchopt differentiates with respect to a tuple of tensors

    def stationarity(phi: tuple, meta: tuple, s: Any) -> tuple:
        g = torch.func.grad(loss)(dict(zip(keys, phi, strict=True)), s)
        return tuple(g[k] + IMAML_LAM * (f - m) for k, f, m in zip(keys, phi, meta, strict=True))

    solve = torchopt.linear_solve.solve_cg(maxiter=IMAML_CG)

    @torchopt.diff.implicit.custom_root(stationarity, argnums=1, solve=solve)
    def inner(phi: tuple, meta: tuple, s: Any) -> tuple:
        anchor = dict(zip(keys, (m.detach() for m in meta), strict=True))

        def prox(p: Params) -> Tensor:
            return loss(p, s) + IMAML_LAM / 2 * sum((p[k] - anchor[k]).square().sum() for k in p)

        u = _prox_sgd(prox, dict(anchor), steps, lr)
        return tuple(u[k] for k in keys)

    meta = tuple(theta[k].detach().requires_grad_() for k in keys)
    n = problem.support[0].shape[0]
    total: Tensor = 0  # type: ignore[assignment]
    for i in range(n):
        s = tuple(t[i] for t in problem.support)
        q = tuple(t[i] for t in problem.query)
        phi = inner(tuple(v.detach() for v in meta), meta, s)
        total = total + loss(dict(zip(keys, phi, strict=True)), q) / n
    return dict(zip(keys, torch.autograd.grad(total, meta), strict=True))


#: The peers that compute each learner (``higher`` and torchopt have no Reptile, FOMAML,
#: Adjoint MAML, Meta-SGD or MAML++ of their own).
PEERS: dict[str, dict[str, Callable[[Problem, int, float], Params]]] = {
    "maml": {"higher": higher_maml, "torchopt (functional + vmap)": torchopt_maml},
    "imaml": {"torchopt.diff.implicit": torchopt_imaml},
}
