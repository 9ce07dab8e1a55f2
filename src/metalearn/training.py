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

from metalearn.algorithms import REGISTRY, Fitted, MetaLearner, make
from metalearn.algorithms.bias import USER_KEY, fit_item_offsets
from metalearn.cell import TrainCell
from metalearn.config import ModelConfig
from metalearn.data.episodes import TaskSource
from metalearn.errors import StageError
from metalearn.evaluation import METRICS, per_task_scores
from metalearn.functional import Params
from metalearn.lifetime import stop_if_interrupted
from metalearn.models import (
    MLP,
    Conv4,
    ItemFactorModel,
    ItemFeatureMLP,
    init_params,
    make_loss,
    make_predict,
)
from metalearn.shard import Shard

MetricsCallback = Callable[[int, dict[str, float]], None]


class NonFiniteError(StageError, RuntimeError):
    """The meta-training loss or meta-gradient became NaN or infinite, or the loss diverged
    (grew past :data:`DIVERGENCE` times its first value)."""


class CompileError(StageError, RuntimeError):
    """``torch.compile`` cannot compile a learner's meta-gradient on this machine."""


#: A meta-training loss this many times its first iteration's has diverged (a finite 1e12 is
#: as lost as a NaN; a learning curve that falls never comes near it).
DIVERGENCE = 1e6


@dataclass
class Task:
    """A benchmark's model and losses, built once per run."""

    model: nn.Module
    loss_fn: Callable
    predict: Callable
    loss_kind: str

    @classmethod
    def build(
        cls,
        model_cfg: ModelConfig,
        source: TaskSource,
        learner: str,
        device: torch.device | None = None,
    ) -> Task:
        """The model of ``learner`` on ``source``: its own (``MetaLearner.model``), else the
        benchmark's (``model_cfg``: the cell's ``model``); a model's fixed tables (the CF item
        features) are placed on ``device``."""
        model = REGISTRY[learner].model(source)
        if model is None:
            model = _benchmark_model(model_cfg, source)
        kind = source.loss_kind
        if device is not None:
            model.to(device)  # buffers only: parameters are passed in, from init_params
        return cls(model, make_loss(model, kind), make_predict(model, kind), kind)


def _benchmark_model(model_cfg: ModelConfig, source: TaskSource) -> nn.Module:
    """The model params.yaml's ``model`` section gives ``source``'s architecture."""
    hidden, activation = model_cfg.hidden, model_cfg.activation
    if source.architecture == "ratings":  # item ids in, item tables in the model
        if model_cfg.cf == "mlp":
            return ItemFeatureMLP(source.features, hidden, activation)
        mean, offsets = source.mean_rating, None
        if model_cfg.item_offsets == "bias":  # start as the bias baseline: a residual over it
            items, ratings = source.train_ratings()
            fit = fit_item_offsets(items, ratings, source.n_items, model_cfg.item_shrinkage)
            mean, offsets = float(fit[USER_KEY]), fit["item.bias.weight"]
        return ItemFactorModel(
            source.features, mean, model_cfg.item_dim, hidden, activation, offsets=offsets
        )
    if source.architecture == "mlp":
        return MLP(source.in_dim, source.out_dim, hidden, activation)
    if source.architecture == "conv4":
        return Conv4(source.in_channels, source.n_classes, model_cfg.filters, source.image_size)
    raise ValueError(f"unknown architecture {source.architecture!r}")


def build_learner(
    cell: TrainCell, steps: int | None = None, fitted: dict[str, Any] | None = None
) -> MetaLearner:
    """The cell's learner with its options (``steps`` overrides K, for meta-test; ``fitted``,
    the options a train stage chose, e.g. the bias baseline's shrinkages)."""
    options = {**cell.options, **(fitted or {})}
    if steps is not None:
        options["steps"] = steps
    adapt_keys = None if cell.adapt == "all" else ["head"]
    return make(cell.learner, adapt_keys=adapt_keys, **options)


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


class ItemDecay:
    """Weight decay of a rating model's item tables (``item.*``) towards their initial values,
    decoupled from Adam (Loshchilov & Hutter, 2019): after each outer step,
    ``theta <- theta - beta_t * rate * (theta - theta_0)``. The tables are the model's only
    per-item parameters, fitted from a few hundred meta-train users; the decay keeps an item
    that few of them rated near its start (zero, or the bias baseline's offset)."""

    PREFIX = "item."

    def __init__(self, params: Params, rate: float) -> None:
        tables = [k for k in params if k.startswith(self.PREFIX)] if rate else []
        self.rate, self.start = rate, {k: params[k].detach().clone() for k in tables}

    @torch.no_grad()
    def step(self, params: Params, lr: float) -> None:
        for k, start in self.start.items():
            params[k].sub_(params[k] - start, alpha=lr * self.rate)


@dataclass
class TrainResult:
    """The parameters of the best meta-val point (``best_iteration``; the last one for a tie),
    the curve, and for a fitted learner the options it chose (``fitted``)."""

    params: Params
    curve: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    best_iteration: int = 0
    best_val: float = math.nan
    fitted: dict[str, Any] = field(default_factory=dict)
    grid: list[dict[str, float]] = field(default_factory=list)  # a fitted learner's candidates
    compile_seconds: float = 0.0  # the first compiled meta-gradient (compiling it included)


def compiled_meta_grad(learner: MetaLearner, cell: TrainCell) -> Callable:
    """``learner.batched_meta_grad_and_loss`` through ``torch.compile`` (inductor: the inner
    loop's many small operations fused into a few kernels). Same arguments and results; a
    learner that torch cannot compile here raises :class:`CompileError` naming the fix."""
    compiled = torch.compile(learner.batched_meta_grad_and_loss)

    def meta_grad(*args: Any) -> tuple[Params, torch.Tensor]:
        try:
            return compiled(*args)
        except torch._dynamo.exc.TorchDynamoException as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise CompileError(
                f"{cell.learner} on {cell.benchmark}: torch.compile cannot compile its "
                f"meta-gradient ({type(error).__name__}: {first}); set train.compile: false "
                "(for this benchmark: pipeline.benchmarks.<name>.train.compile) and re-run"
            ) from None

    return meta_grad


def to_device(tree: Any, device: torch.device) -> Any:
    return torch.utils._pytree.tree_map(lambda t: t.to(device), tree)


def meta_train(
    cell: TrainCell,
    source: TaskSource,
    device: torch.device,
    on_metrics: MetricsCallback | None = None,
    shard: Shard | None = None,
) -> TrainResult:
    """Meta-train the cell's learner on ``source`` for its ``iterations`` outer steps.

    Each step samples ``meta_batch`` tasks from a generator seeded by ``seed`` (same seed,
    same numbers), takes the learner's mean meta-gradient over them (one ``vmap``) and steps
    Adam with ``meta_lr``. Every ``val_every`` steps (and at the last) the meta-val tasks are
    scored; the result holds the parameters of the best of those points, which meta-test then
    uses (model selection on meta-val, not the last iterate). With a ``shard`` (a rank of a
    data-parallel run: :mod:`metalearn.distributed`) the meta-gradient is taken on this rank's
    share of each meta-batch and averaged over the ranks, and only rank 0 meta-validates. Raises
    :class:`NonFiniteError` naming the learner, benchmark and iteration on a NaN/inf. A learner
    that is not meta-trained (``scratch``) keeps the initialisation: its curve is one
    meta-val point at iteration 0. A :class:`~metalearn.algorithms.Fitted` baseline is fitted
    instead (:func:`fit`).
    """
    learner_name, benchmark = cell.learner, cell.benchmark
    task = Task.build(cell.model, source, learner_name, device)
    learner = build_learner(cell)
    val_tasks = to_device(source.fixed_tasks("val"), device)
    metric = METRICS[task.loss_kind]
    start = time.perf_counter()
    if isinstance(learner, Fitted):
        result = fit(learner, task, source, val_tasks, device, on_metrics)
        result.seconds = time.perf_counter() - start
        return result
    tasks_rng = torch.Generator().manual_seed(cell.seed)
    init_rng = torch.Generator().manual_seed(cell.seed)
    params = learner.meta_params(init_params(task.model, init_rng, device=device))
    optimizer = Adam(params, lr=cell.meta_lr)
    decay = ItemDecay(params, cell.model.item_decay)
    best = _Best(metric.higher_is_better)

    def validate(iteration: int) -> dict[str, float]:
        scores = per_task_scores(
            learner, task.loss_fn, task.predict, params, val_tasks, task.loss_kind
        )
        value = float(scores.mean())
        best.offer(iteration, value, params)
        return {f"meta_val_{metric.name}": value}

    result = TrainResult(params={})
    lead = shard is None or shard.rank == 0  # the rank that meta-validates
    if not learner.meta_trained:
        row = validate(0)
        result.curve.append({"iteration": 0, **row})
        if on_metrics is not None:
            on_metrics(0, row)
    last = cell.iterations if learner.meta_trained else 0
    compiled = cell.compile and learner.meta_trained
    meta_grad = (
        compiled_meta_grad(learner, cell) if compiled else learner.batched_meta_grad_and_loss
    )
    steps = range(1, last + 1)
    bar = tqdm(steps, desc=f"train {learner_name} on {benchmark}", disable=not sys.stderr.isatty())
    first_loss = None
    for iteration in bar:
        stop_if_interrupted()
        optimizer.lr = meta_lr_at(cell, iteration)
        learner.set_iteration(iteration)
        support, query = to_device(source.sample_train(cell.meta_batch, tasks_rng), device)
        if shard is not None:  # every rank drew the same batch: this rank's tasks of it
            support, query = shard.take((support, query), cell.meta_batch)
        step_start = time.perf_counter()
        grads, loss = meta_grad(task.loss_fn, params, support, query)
        if shard is not None:
            grads, loss = shard.average(grads, loss, cell.meta_batch)
        if compiled and iteration == 1:
            result.compile_seconds = time.perf_counter() - step_start
        _check_finite(loss, grads, cell, iteration)
        first_loss = float(loss) if first_loss is None else first_loss
        _check_divergence(float(loss), first_loss, cell, iteration)
        optimizer.step(params, grads)
        decay.step(params, optimizer.lr)
        row = {"meta_train_loss": float(loss)}
        if lead and (iteration % cell.val_every == 0 or iteration == last):
            row.update(validate(iteration))
            bar.set_postfix(row)
        result.curve.append({"iteration": iteration, **row})
        if on_metrics is not None:
            on_metrics(iteration, row)
    result.seconds = time.perf_counter() - start
    result.params, result.best_iteration, result.best_val = best.params, best.iteration, best.value
    return result


def meta_lr_at(cell: TrainCell, iteration: int) -> float:
    """The outer step size at ``iteration`` (1 to ``cell.iterations``): ``meta_lr`` throughout
    for ``constant``; for ``cosine`` (Loshchilov & Hutter, 2017, without restarts)
    ``meta_lr * (f + (1 - f) * (1 + cos(pi * (t - 1) / (T - 1))) / 2)`` with ``f`` the floor:
    ``meta_lr`` at the first iteration, ``f * meta_lr`` at the last."""
    if cell.meta_lr_schedule == "constant" or cell.iterations == 1:
        return cell.meta_lr
    progress = (iteration - 1) / (cell.iterations - 1)
    floor = cell.meta_lr_floor
    return cell.meta_lr * (floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2)


def training_seeds(cell: TrainCell) -> list[int]:
    """The seeds a train stage runs: ``seeds`` consecutive ones from ``seed``; one for a
    learner that is not ``seeded`` (the bias baseline's closed-form fit)."""
    count = cell.seeds if REGISTRY[cell.learner].seeded else 1
    return [cell.seed + i for i in range(count)]


class _Best:
    """The best meta-val point so far and a copy of its parameters (a later tie wins: with a
    flat curve the longer-trained parameters are kept)."""

    def __init__(self, higher_is_better: bool) -> None:
        self.sign = 1.0 if higher_is_better else -1.0
        self.iteration, self.value, self.params = 0, math.nan, {}

    def offer(self, iteration: int, value: float, params: Params) -> None:
        if not self.params or self.sign * value >= self.sign * self.value:
            self.iteration, self.value = iteration, value
            self.params = {k: v.detach().cpu().clone() for k, v in params.items()}


def fit(
    learner: Fitted,
    task: Task,
    source: TaskSource,
    val_tasks: tuple,
    device: torch.device,
    on_metrics: MetricsCallback | None = None,
) -> TrainResult:
    """A fitted baseline's fit (:meth:`~metalearn.algorithms.Fitted.fit`), each candidate
    scored on the meta-val tasks. ``result.grid`` has one row per candidate; the curve is the
    chosen one's meta-val point, and ``result.fitted`` the options meta-test rebuilds it with."""
    metric = METRICS[task.loss_kind]
    key = f"meta_val_{metric.name}"

    def score(candidate: MetaLearner, params: Params) -> float:
        params = to_device(params, device)
        scores = per_task_scores(
            candidate, task.loss_fn, task.predict, params, val_tasks, task.loss_kind
        )
        return float(scores.mean())

    found = learner.fit(source, score, metric.higher_is_better)
    row = {key: found.value, **found.chosen}
    if on_metrics is not None:
        on_metrics(0, row)
    return TrainResult(
        params={k: v.detach().cpu() for k, v in found.params.items()},
        curve=[{"iteration": 0, **row}],
        best_val=found.value,
        fitted=found.options,
        grid=[{(key if k == "meta_val" else k): v for k, v in r.items()} for r in found.grid],
    )


def _fix(cell: TrainCell) -> str:
    """What to change after a divergence: the keys that set this cell's step sizes and K."""
    keys, o = cell.keys, cell.options
    return (
        f"Lower {keys['inner_lr']} (now {o['inner_lr']:g}) or {keys['meta_lr']} (now "
        f"{cell.meta_lr:g}), or {keys['steps']} (now {o['steps']}), and re-run."
    )


def _check_divergence(loss: float, first: float, cell: TrainCell, it: int) -> None:
    if loss > DIVERGENCE * max(first, torch.finfo(torch.float32).tiny):
        raise NonFiniteError(
            f"{cell.learner} on {cell.benchmark}: the meta-training loss diverged at iteration "
            f"{it} ({loss:.3g}, over {DIVERGENCE:g} x its first value {first:.3g}). {_fix(cell)}"
        )


def _check_finite(loss: torch.Tensor, grads: Params, cell: TrainCell, it: int) -> None:
    bad = [k for k, g in grads.items() if not torch.isfinite(g).all()]
    if not math.isfinite(float(loss)) or bad:
        what = f"meta-gradient of {', '.join(bad)}" if bad else f"query loss ({float(loss)})"
        raise NonFiniteError(
            f"{cell.learner} on {cell.benchmark}: non-finite {what} at iteration {it}. {_fix(cell)}"
        )
