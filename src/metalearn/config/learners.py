"""The learners in ``params.yaml``: each ``algo.<learner>`` section checked against the options
its class declares (:mod:`metalearn.algorithms`), the lists of learners, and which value a
learner uses (its own key over the shared one).

The stages that run learners import this module; download and episodify do not, so their code
manifests hold no learner and an algorithm edit re-runs no download. A learner's section may
leave out any key: the shared keys it refines default to null (use the shared key), its own
options to the defaults its class declares.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from metalearn.algorithms import META_LEARNERS, NAMES, REGISTRY, Fitted
from metalearn.config.errors import ConfigError, _show, validate
from metalearn.config.precedence import benchmark_config
from metalearn.config.schema import SHARED_ALGO_KEYS, Config, section
from metalearn.values import AtLeast1, Positive

#: The keys every learner's section has: null, or the learner's own value of a shared key
#: (``algo.steps``, ``algo.inner_lr``, ``eval.steps``, ``train.iterations``, ``train.meta_lr``).
REFINING = {
    "steps": AtLeast1 | None,
    "inner_lr": Positive | None,
    "eval_steps": AtLeast1 | None,
    "iterations": AtLeast1 | None,
    "meta_lr": Positive | None,
}


@functools.cache
def section_type(learner: str) -> type:
    """The (pydantic) dataclass of ``algo.<learner>``: :data:`REFINING` and the learner's own
    options, with their defaults."""
    cls = REGISTRY[learner]
    kinds: dict[str, Any] = dict(REFINING)
    defaults: dict[str, Any] = dict.fromkeys(REFINING)
    for key, option in cls.options.items():
        default = option.check(key, option.default)
        kinds[key] = option.kind
        defaults[key] = dataclasses.field(default_factory=lambda d=default: d)
    namespace = {"__annotations__": kinds, "__module__": __name__, **defaults}
    return section(type(f"{cls.__name__}Section", (), namespace))


def _unknown(learner: str, where: str) -> ConfigError:
    return ConfigError(
        f"unknown key '{where}.{learner}' (valid: {', '.join([*SHARED_ALGO_KEYS, *NAMES])}); "
        "a learner is a module of src/metalearn/algorithms (docs/learners.md: Add a learner)"
    )


def learner_section(cfg: Config, learner: str, where: str = "algo") -> Any:
    """``algo.<learner>`` of ``cfg`` (a benchmark's config when it overrides keys), validated,
    its defaults filled in; ``where`` names the section in messages."""
    if learner not in REGISTRY:
        raise _unknown(learner, where)
    raw = cfg.algo.learners.get(learner)
    return validate(section_type(learner), {} if raw is None else raw, at=f"{where}.{learner}")


def check_learners(cfg: Config) -> None:
    """Every learner named in ``cfg`` exists and every learner section is valid, at the top
    level and merged into each benchmark; a learner for some architectures only is listed
    where it applies; fitted baselines are not tuned; the efficiency variants are
    meta-learners."""
    p = cfg.pipeline
    lists = {"pipeline.learners": p.learners, "pipeline.cf_learners": p.cf_learners}
    lists |= {"tune.learners": cfg.tune.learners}
    for key, names in lists.items():
        for i, name in enumerate(names):
            if name not in REGISTRY:
                raise ConfigError(f"{key}[{i}] = {_show(name)}: must be one of {', '.join(NAMES)}")
    for name in cfg.algo.learners:
        learner_section(cfg, name)
    for benchmark in p.benchmarks:
        merged = benchmark_config(cfg, benchmark)
        try:
            for name in merged.algo.learners:
                learner_section(merged, name)
        except ConfigError as e:
            raise ConfigError(f"pipeline.benchmarks.{benchmark} (its overrides): {e}") from None
    for name in p.learners:
        if REGISTRY[name].architectures is not None:
            raise ConfigError(
                f"pipeline.learners lists {name!r}, which applies to "
                f"{', '.join(REGISTRY[name].architectures)} benchmarks only (collaborative "
                "filtering): list it under pipeline.cf_learners instead"
            )
    for name in p.cf_learners:
        if REGISTRY[name].architectures != ("ratings",):
            cf_only = [n for n, c in REGISTRY.items() if c.architectures == ("ratings",)]
            raise ConfigError(
                f"pipeline.cf_learners lists {name!r}: it takes only learners for collaborative "
                f"filtering ({', '.join(cf_only)}); list {name!r} under pipeline.learners"
            )
    for name in cfg.tune.learners:
        if issubclass(REGISTRY[name], Fitted):
            raise ConfigError(
                f"tune.learners lists {name!r}: its train stage already chooses its options on "
                "meta-val; tune only meta-trained learners"
            )
    for variant, spec in cfg.efficiency.variants.items():
        if spec.learner not in META_LEARNERS:
            raise ConfigError(
                f"efficiency.variants.{variant}.learner = {spec.learner!r}: must be one of "
                f"{', '.join(META_LEARNERS)}"
            )


def learner_options(cfg: Config, learner: str) -> dict[str, Any]:
    """Keyword arguments for ``metalearn.algorithms.make(learner, **options)``: ``steps`` and
    ``inner_lr`` (``algo.<learner>.<key>`` when not null, else ``algo.<key>``) plus the learner's
    own options. ``algo.adapt`` is not included: the caller turns it into ``adapt_keys`` for its
    model. ``cfg`` is a benchmark's config (:func:`benchmark_config`) when the benchmark
    overrides keys."""
    own = learner_section(cfg, learner)
    options = {
        "steps": own.steps if own.steps is not None else cfg.algo.steps,
        "inner_lr": own.inner_lr if own.inner_lr is not None else cfg.algo.inner_lr,
    }
    return options | {key: getattr(own, key) for key in REGISTRY[learner].options}


def iterations(cfg: Config, learner: str) -> int:
    """Meta-training iterations: ``algo.<learner>.iterations`` when not null, else
    ``train.iterations``."""
    own = learner_section(cfg, learner).iterations
    return own if own is not None else cfg.train.iterations


def meta_lr(cfg: Config, learner: str) -> float:
    """The outer Adam step size: ``algo.<learner>.meta_lr`` when not null, else
    ``train.meta_lr``."""
    own = learner_section(cfg, learner).meta_lr
    return own if own is not None else cfg.train.meta_lr


def eval_steps(cfg: Config, learner: str) -> int:
    """Inner steps at meta-test: ``algo.<learner>.eval_steps``, else ``eval.steps``, else the
    learner's training K (the first that is not null)."""
    for steps in (learner_section(cfg, learner).eval_steps, cfg.eval.steps):
        if steps is not None:
            return steps
    return learner_options(cfg, learner)["steps"]


def setting_keys(cfg: Config, learner: str, benchmark: str) -> dict[str, str]:
    """The params.yaml key that sets ``learner``'s ``steps``, ``inner_lr`` and ``meta_lr`` on
    ``benchmark``, by the precedence of :func:`benchmark_config`: what a message tells a user to
    change (a tuned benchmark's own ``algo.<learner>.inner_lr``, not the shared key)."""
    entry, at = cfg.pipeline.benchmarks[benchmark], f"pipeline.benchmarks.{benchmark}"
    entry_own = entry.algo.get(learner) or {}
    own = cfg.algo.learners.get(learner) or {}

    def key(name: str, section: str) -> str:
        if entry_own.get(name) is not None:
            return f"{at}.algo.{learner}.{name}"
        if name in getattr(entry, section):
            return f"{at}.{section}.{name}"
        if own.get(name) is not None:
            return f"algo.{learner}.{name}"
        return f"{section}.{name}"

    return {"steps": key("steps", "algo"), "inner_lr": key("inner_lr", "algo")} | {
        "meta_lr": key("meta_lr", "train")
    }
