"""The rules that involve more than one key (e.g. ``eval.tasks`` against a dataset's meta-test
tasks), checked once the types are: :func:`build_config`."""

import dataclasses
from collections.abc import Mapping
from typing import Any

from metalearn.config.errors import ConfigError, _show, validate
from metalearn.config.precedence import benchmark_config, dataset_config, parse_benchmark
from metalearn.config.schema import (
    CF_DATASETS,
    EFFICIENCY_PROBLEMS,
    Config,
    EfficiencyConfig,
    ModelConfig,
    PipelineConfig,
    TrainConfig,
    algo_from_params,
)


def _check_config(cfg: Config) -> None:
    """The rules that involve more than one key."""
    _check_efficiency(cfg.efficiency)
    _check_tune(cfg)
    _check_cf_benchmarks(cfg.pipeline)
    used = {entry.dataset for entry in cfg.pipeline.benchmarks.values()}
    if set(cfg.pipeline.datasets) != used:
        raise ConfigError(
            f"pipeline.datasets = {_show(cfg.pipeline.datasets)}: must list exactly the datasets "
            f"of pipeline.benchmarks ({', '.join(sorted(used))})"
        )
    for name, entry in cfg.pipeline.benchmarks.items():
        try:
            dataset, setting = parse_benchmark(cfg, name)
        except ConfigError as e:
            raise ConfigError(f"pipeline.benchmarks.{name}: {e}") from None
        if (entry.dataset, entry.setting) != (dataset, setting):
            raise ConfigError(
                f"pipeline.benchmarks.{name} = {{dataset: {entry.dataset}, setting: "
                f"{entry.setting}}}: must be {{dataset: {dataset}, setting: {setting}}} "
                "to match the name"
            )
        effective = benchmark_config(cfg, name)
        available = dataset_config(cfg, dataset).meta_test_tasks
        if effective.eval.tasks > available:
            raise ConfigError(
                f"eval.tasks = {effective.eval.tasks}: benchmark {name!r} has only {available} "
                f"meta-test tasks (data.{dataset}); lower eval.tasks"
            )
        _check_cuda(effective.train.device, f"train.device = 'cuda' (benchmark {name!r})")
        _check_processes(effective.train, name)


def _check_processes(train: TrainConfig, benchmark: str) -> None:
    """Data-parallel ranks each take a share of the meta-batch, and run one seed after another."""
    if train.processes > train.meta_batch:
        raise ConfigError(
            f"train.processes = {train.processes}: benchmark {benchmark!r} has only "
            f"{train.meta_batch} tasks a meta-batch to share; lower train.processes"
        )
    if train.processes > 1 and train.workers > 1:
        raise ConfigError(
            f"train.processes = {train.processes} and train.workers = {train.workers} (benchmark "
            f"{benchmark!r}): use one of them (ranks share a meta-batch, workers run seeds at "
            "once); set the other to 1"
        )


def _check_tune(cfg: Config) -> None:
    keys = [f.name for f in dataclasses.fields(ModelConfig)]
    for key, candidates in cfg.tune.model.items():
        if key not in keys:
            raise ConfigError(f"tune.model.{key}: not a key of model ({', '.join(keys)})")
        for value in candidates:  # each candidate as the model section would take it
            validate(ModelConfig, {**dataclasses.asdict(cfg.model), key: value}, "tune.model")
    for name in cfg.tune.benchmarks:
        if name not in cfg.pipeline.benchmarks:
            raise ConfigError(
                f"tune.benchmarks lists {name!r}, which is not in pipeline.benchmarks "
                f"({', '.join(cfg.pipeline.benchmarks)})"
            )


def _check_cf_benchmarks(pipeline: PipelineConfig) -> None:
    """``cf_learners`` run on ``cf_benchmarks`` only, which must be rating benchmarks."""
    for name in pipeline.cf_benchmarks:
        entry = pipeline.benchmarks.get(name)
        if entry is None or entry.dataset not in CF_DATASETS:
            cf = [b for b, e in pipeline.benchmarks.items() if e.dataset in CF_DATASETS]
            raise ConfigError(
                f"pipeline.cf_benchmarks lists {name!r}, which is not a collaborative-filtering "
                f"benchmark of pipeline.benchmarks (those are: {', '.join(cf) or 'none'})"
            )


def _check_efficiency(eff: EfficiencyConfig) -> None:
    valid = ", ".join(EFFICIENCY_PROBLEMS)
    for key, table in (("meta_batch", eff.meta_batch), ("peers", eff.peers)):
        for problem in table:
            if problem not in EFFICIENCY_PROBLEMS:
                raise ConfigError(f"unknown problem 'efficiency.{key}.{problem}' (valid: {valid})")
    _check_cuda(eff.device, "efficiency.device = 'cuda'")


def _check_cuda(device: str, setting: str) -> None:
    """A ``cuda`` device needs a visible GPU; ``setting`` names the key in the message."""
    if device == "cuda":
        import torch  # only for a cuda setting: loading params stays torch-free (1.4 s)

        if not torch.cuda.is_available():
            raise ConfigError(f"{setting} but no CUDA GPU is visible; use 'auto' or 'cpu'")


def build_config(data: Mapping[str, Any]) -> Config:
    """Validate plain parameters (as in ``params.yaml``) into a :class:`Config`; the learners'
    sections and names are :func:`metalearn.config.learners.check_learners`'s to check."""
    if isinstance(data, Mapping) and "algo" in data:
        data = {**data, "algo": algo_from_params(data["algo"])}
    cfg = validate(Config, data)
    _check_config(cfg)
    return cfg
