"""Which value a stage uses: a benchmark's own protocol over the top level, a learner's key over
the shared one (the precedence of the package docstring), and the names of benchmarks."""

import dataclasses
from collections.abc import Mapping
from typing import Any

from metalearn.config.errors import ConfigError, validate
from metalearn.config.schema import (
    OVERRIDABLE,
    SHARED_ALGO_KEYS,
    Config,
    DataConfig,
    DatasetSection,
    algo_from_params,
    algo_to_params,
)


def _merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, mapping into mapping; other values are replaced."""
    merged = dict(base)
    for key, value in changes.items():
        old = merged.get(key)
        both = isinstance(old, Mapping) and isinstance(value, Mapping)
        merged[key] = _merge(old, value) if both else value
    return merged


# A per-learner key and the shared key it refines: (learner key, (section, shared key)).
_REFINED = (("steps", ("algo", "steps")), ("inner_lr", ("algo", "inner_lr")))
_REFINED += (("eval_steps", ("eval", "steps")), ("iterations", ("train", "iterations")))
_REFINED += (("meta_lr", ("train", "meta_lr")),)


def benchmark_config(cfg: Config, benchmark: str) -> Config:
    """The config that stages of ``benchmark`` run with: the top-level ``algo``, ``model``,
    ``train`` and ``eval`` sections with the benchmark entry's sections merged over them.

    Precedence, lowest to highest (the scope first, then the learner within a scope):
    ``algo.<key>`` < ``algo.<learner>.<key>`` < ``pipeline.benchmarks.<b>.algo.<key>``
    < ``pipeline.benchmarks.<b>.algo.<learner>.<key>`` (likewise ``eval.steps`` and
    ``algo.<learner>.eval_steps``). So a benchmark that sets ``algo.steps`` sets it for every
    learner, even one with its own top-level ``algo.<learner>.steps``.
    """
    if benchmark not in cfg.pipeline.benchmarks:
        known = ", ".join(cfg.pipeline.benchmarks)
        raise ConfigError(f"benchmark {benchmark!r} is not in pipeline.benchmarks ({known})")
    entry = cfg.pipeline.benchmarks[benchmark]
    changes = {s: getattr(entry, s) for s in OVERRIDABLE if getattr(entry, s)}
    if not changes:
        return cfg
    data = dataclasses.asdict(cfg)
    data["algo"] = algo_to_params(data["algo"])
    for section, values in changes.items():
        data[section] = _merge(data[section], values)
    algo_changes = changes.get("algo", {})
    for key, (section, shared) in _REFINED:
        if shared in changes.get(section, {}):
            for learner, own in data["algo"].items():  # the benchmark's shared key beats
                mine = algo_changes.get(learner) or {}  # the top-level learner keys
                if learner not in SHARED_ALGO_KEYS and isinstance(own, dict) and key not in mine:
                    own[key] = None
    data["algo"] = algo_from_params(data["algo"])
    try:
        return validate(Config, data)
    except ConfigError as e:
        raise ConfigError(f"pipeline.benchmarks.{benchmark} (its overrides): {e}") from None


def learners_of(cfg: Config, benchmark: str) -> list[str]:
    """The learners that run on ``benchmark``: ``pipeline.learners``, and ``cf_learners`` on
    the ``cf_benchmarks``."""
    extra = cfg.pipeline.cf_learners if benchmark in cfg.pipeline.cf_benchmarks else []
    return [*cfg.pipeline.learners, *extra]


def dataset_config(cfg: Config, dataset: str) -> DatasetSection:
    """The section ``data.<dataset>``."""
    names = [f.name for f in dataclasses.fields(DataConfig)]
    if dataset not in names:
        raise ConfigError(f"unknown dataset {dataset!r} (valid: {', '.join(names)})")
    return getattr(cfg.data, dataset)


def all_benchmarks(cfg: Config) -> list[str]:
    """Every ``"<dataset>-<setting>"`` that ``cfg.data`` defines."""
    return [
        f"{f.name}-{setting}"
        for f in dataclasses.fields(DataConfig)
        for setting in getattr(cfg.data, f.name).settings
    ]


def parse_benchmark(cfg: Config, name: str) -> tuple[str, str]:
    """Split ``"<dataset>-<setting>"`` (e.g. ``cosmixture-shot50``) into (dataset, setting)."""
    dataset, _, setting = name.partition("-")
    names = [f.name for f in dataclasses.fields(DataConfig)]
    if dataset not in names or setting not in getattr(cfg.data, dataset).settings:
        raise ConfigError(
            f"unknown benchmark {name!r}: a benchmark is '<dataset>-<setting>' with the setting a "
            f"key of data.<dataset>.settings; valid: {', '.join(all_benchmarks(cfg))}"
        )
    return dataset, setting
