"""The meta-training loop: batched meta-gradients, an outer Adam step, periodic meta-validation."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from metalearn.algorithms import MetaLearner, make
from metalearn.config import Config, iterations, learner_options
from metalearn.data.episodes import TaskSource
from metalearn.evaluation import METRICS, per_task_scores
from metalearn.functional import Params
from metalearn.models import MLP, Conv4, init_params, make_loss, make_predict

MetricsCallback = Callable[[int, dict[str, float]], None]


class NonFiniteError(RuntimeError):
    """The meta-training loss or meta-gradient became NaN or infinite."""


@dataclass
class Task:
    """A benchmark's model and losses, built once per run."""

    model: nn.Module
    loss_fn: Callable
    predict: Callable
    loss_kind: str

    @classmethod
    def build(cls, cfg: Config, source: TaskSource) -> Task:
        if source.architecture == "mlp":
            model = MLP(source.in_dim, source.out_dim, cfg.model.hidden, cfg.model.activation)
        elif source.architecture == "conv4":
            model = Conv4(
                source.in_channels, source.n_classes, cfg.model.filters, source.image_size
            )
        else:
            raise ValueError(f"unknown architecture {source.architecture!r}")
        kind = source.loss_kind
        return cls(model, make_loss(model, kind), make_predict(model, kind), kind)


def build_learner(cfg: Config, name: str, steps: int | None = None) -> MetaLearner:
    """The learner ``name`` with its options from ``cfg`` (``steps`` overrides K, for meta-test)."""
    options = learner_options(cfg, name)
    if steps is not None:
        options["steps"] = steps
    adapt_keys = None if cfg.algo.adapt == "all" else ["head"]
    return make(name, adapt_keys=adapt_keys, **options)


class Adam:
    """Adam (Kingma & Ba, 2015) on a parameter dict: the update of ``torch.optim.Adam`` with its
    defaults, operation for operation (``tests/test_stages.py`` checks them equal in float64).
    Our own because constructing torch's imports ``torch._dynamo``: 1.3 s of every train stage
    on a 2-core CPU, for ten lines of arithmetic."""

    def __init__(
        self, params: Params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps=1e-8
    ) -> None:
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.exp_avg = {k: torch.zeros_like(v) for k, v in params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in params.items()}
        self.steps = 0

    @torch.no_grad()
    def step(self, params: Params, grads: Params) -> None:
        """Update ``params`` in place from ``grads``."""
        self.steps += 1
        step_size = self.lr / (1 - self.beta1**self.steps)
        bias_correction2_sqrt = (1 - self.beta2**self.steps) ** 0.5
        for k, p in params.items():
            m, v, g = self.exp_avg[k], self.exp_avg_sq[k], grads[k]
            m.lerp_(g, 1 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            p.addcdiv_(m, (v.sqrt() / bias_correction2_sqrt).add_(self.eps), value=-step_size)


@dataclass
class TrainResult:
    params: Params
    curve: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def to_device(tree: Any, device: torch.device) -> Any:
    return torch.utils._pytree.tree_map(lambda t: t.to(device), tree)


def meta_train(
    cfg: Config,
    learner_name: str,
    benchmark: str,
    source: TaskSource,
    device: torch.device,
    on_metrics: MetricsCallback | None = None,
) -> TrainResult:
    """Meta-train ``learner_name`` on ``source`` for its ``iterations`` (config) outer steps.

    Each step samples ``meta_batch`` tasks from a generator seeded by ``train.seed`` (same seed,
    same numbers), takes the learner's mean meta-gradient over them (one ``vmap``) and steps
    Adam with ``meta_lr``. Every ``val_every`` steps the meta-val tasks are scored. Raises
    :class:`NonFiniteError` naming the learner, benchmark and iteration on a NaN/inf. A learner
    that is not meta-trained (``scratch``) keeps the initialisation: its curve is one
    meta-val point at iteration 0.
    """
    task = Task.build(cfg, source)
    learner = build_learner(cfg, learner_name)
    tasks_rng = torch.Generator().manual_seed(cfg.train.seed)
    init_rng = torch.Generator().manual_seed(cfg.train.seed)
    params = init_params(task.model, init_rng, device=device)
    optimizer = Adam(params, lr=cfg.train.meta_lr)
    val_tasks = to_device(source.fixed_tasks("val"), device)
    metric = METRICS[task.loss_kind].name

    result = TrainResult(params={})
    start = time.perf_counter()
    if not learner.meta_trained:
        scores = per_task_scores(
            learner, task.loss_fn, task.predict, params, val_tasks, task.loss_kind
        )
        row = {f"meta_val_{metric}": float(scores.mean())}
        result.curve.append({"iteration": 0, **row})
        if on_metrics is not None:
            on_metrics(0, row)
    last = iterations(cfg, learner_name) if learner.meta_trained else 0
    steps = range(1, last + 1)
    bar = tqdm(steps, desc=f"train {learner_name} on {benchmark}", disable=not sys.stderr.isatty())
    for iteration in bar:
        support, query = to_device(source.sample_train(cfg.train.meta_batch, tasks_rng), device)
        grads, loss = learner.batched_meta_grad_and_loss(task.loss_fn, params, support, query)
        _check_finite(loss, grads, learner_name, benchmark, iteration)
        optimizer.step(params, grads)
        row = {"meta_train_loss": float(loss)}
        if iteration % cfg.train.val_every == 0 or iteration == last:
            scores = per_task_scores(
                learner, task.loss_fn, task.predict, params, val_tasks, task.loss_kind
            )
            row[f"meta_val_{metric}"] = float(scores.mean())
            bar.set_postfix(row)
        result.curve.append({"iteration": iteration, **row})
        if on_metrics is not None:
            on_metrics(iteration, row)
    result.seconds = time.perf_counter() - start
    result.params = {k: v.detach().cpu() for k, v in params.items()}
    return result


def _check_finite(loss: torch.Tensor, grads: Params, learner: str, benchmark: str, it: int):
    bad = [k for k, g in grads.items() if not torch.isfinite(g).all()]
    if not math.isfinite(float(loss)) or bad:
        what = f"meta-gradient of {', '.join(bad)}" if bad else f"query loss ({float(loss)})"
        raise NonFiniteError(
            f"{learner} on {benchmark}: non-finite {what} at iteration {it}. "
            "Lower algo.inner_lr or train.meta_lr, or fewer algo.steps, and re-run."
        )
