"""Which value a stage uses: a benchmark's own protocol over the top level, a learner's key over
the shared one (the precedence of the package docstring), and the names of benchmarks."""

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from metalearn.config.errors import ConfigError, validate
from metalearn.config.schema import (
    LEARNERS,
    OVERRIDABLE,
    Config,
    DataConfig,
    DatasetSection,
    EfficiencyConfig,
    TrainConfig,
)

if TYPE_CHECKING:
    import torch


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
    for section, values in changes.items():
        data[section] = _merge(data[section], values)
    algo_changes = changes.get("algo", {})
    for key, (section, shared) in _REFINED:
        if shared in changes.get(section, {}):
            for learner in LEARNERS:  # the benchmark's shared key beats top-level learner keys
                if key not in (algo_changes.get(learner) or {}):
                    data["algo"][learner][key] = None
    try:
        return validate(Config, data)
    except ConfigError as e:
        raise ConfigError(f"pipeline.benchmarks.{benchmark} (its overrides): {e}") from None


def learners_of(cfg: Config, benchmark: str) -> list[str]:
    """The learners that run on ``benchmark``: ``pipeline.learners``, and ``cf_learners`` on
    the ``cf_benchmarks``."""
    extra = cfg.pipeline.cf_learners if benchmark in cfg.pipeline.cf_benchmarks else []
    return [*cfg.pipeline.learners, *extra]


def resolve_device(train: "TrainConfig | EfficiencyConfig") -> "torch.device":
    """``train.device`` as a torch device: ``auto`` is CUDA when a GPU is visible, else CPU."""
    import torch

    if train.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(train.device)


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


def learner_options(cfg: Config, learner: str) -> dict[str, Any]:
    """Keyword arguments for ``metalearn.algorithms.make(learner, **options)``: ``steps`` and
    ``inner_lr`` (``algo.<learner>.<key>`` when not null, else ``algo.<key>``) plus the learner's
    own keys (imaml: lam, cg_steps; adjoint: scheme, trajectory, checkpoint_every). ``algo.adapt``
    is not included: the caller turns it into ``adapt_keys`` for its model. ``cfg`` is a
    benchmark's config (:func:`benchmark_config`) when the benchmark overrides keys."""
    if learner not in LEARNERS:
        raise ConfigError(f"unknown learner {learner!r} (valid: {', '.join(LEARNERS)})")
    section = getattr(cfg.algo, learner)
    options = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
    del options["eval_steps"], options["iterations"], options["meta_lr"]  # see their functions
    for key in ("steps", "inner_lr"):
        if options[key] is None:
            options[key] = getattr(cfg.algo, key)
    return options


def iterations(cfg: Config, learner: str) -> int:
    """Meta-training iterations: ``algo.<learner>.iterations`` when not null, else
    ``train.iterations``."""
    own = getattr(cfg.algo, learner).iterations
    return own if own is not None else cfg.train.iterations


def meta_lr(cfg: Config, learner: str) -> float:
    """The outer Adam step size: ``algo.<learner>.meta_lr`` when not null, else
    ``train.meta_lr``."""
    own = getattr(cfg.algo, learner).meta_lr
    return own if own is not None else cfg.train.meta_lr


def eval_steps(cfg: Config, learner: str) -> int:
    """Inner steps at meta-test: ``algo.<learner>.eval_steps``, else ``eval.steps``, else the
    learner's training K (the first that is not null)."""
    for steps in (getattr(cfg.algo, learner).eval_steps, cfg.eval.steps):
        if steps is not None:
            return steps
    return learner_options(cfg, learner)["steps"]
