"""Typed, validated parameters: ``params.yaml`` plus command-line overrides.

``params.yaml`` (repository root) is the single source of parameters. :func:`load_config` composes
it with Hydra's compose API, applies Hydra overrides such as ``algo.steps=100`` and validates the
result into the frozen dataclasses below (:class:`Config` and its sections, whose field names are
the keys of ``params.yaml``).

Precedence, lowest to highest:

1. ``params.yaml``;
2. the overrides given to :func:`load_config` (a stage's command line, see :func:`split_cli`);
3. per benchmark, the keys its ``pipeline.benchmarks.<name>`` entry sets (:func:`benchmark_config`);
4. per learner, ``algo.<learner>.<key>`` when not null over the shared ``algo.<key>``
   (``steps`` and ``inner_lr``, see :func:`learner_options`) within the same scope (top level or
   benchmark entry); at meta-test, ``algo.<learner>.eval_steps``, then ``eval.steps``, then the
   learner's training ``steps`` (see :func:`eval_steps`).

Error policy: every problem is a :class:`ConfigError` (a ``ValueError``) raised while loading, so a
stage fails before doing any work, with a message that names the dotted key, the bad value and what
is allowed, e.g. ``algo.steps = 0: must be an integer >= 1``. Nothing is filled in silently: every
key is required (``null`` where documented as optional; a benchmark entry's override sections may
be left out), and unknown keys are errors everywhere,
including keys added with Hydra's ``+key=value`` form. Typing is strict: an integer is accepted for
a float, but neither a bool nor a float is accepted for an integer.

Benchmarks are named ``"<dataset>-<setting>"`` (split at the first ``-``): ``dataset`` is a field of
:class:`DataConfig` and ``setting`` a key of ``data.<dataset>.settings``. A new dataset is a new
field of :class:`DataConfig` whose section has ``settings`` and a ``meta_test_tasks`` property.

Setting names start with a letter (``shot50``, not ``50shot``): Hydra's override grammar, which
``dvc exp run -S`` also uses, cannot address a key that starts with a digit.
"""

import dataclasses
import math
import operator
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, get_origin, get_type_hints

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, HydraException, OverrideParseException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

if TYPE_CHECKING:
    import torch

PARAMS_FILE = "params.yaml"

Learner = Literal["maml", "fomaml", "reptile", "imaml", "adjoint", "pretrain", "scratch", "bias"]
LEARNERS: tuple[str, ...] = get_args(Learner)
#: Learners for the collaborative-filtering benchmarks only (``pipeline.cf_learners``).
CF_ONLY_LEARNERS = ("bias",)
#: The datasets of the collaborative-filtering benchmarks (ratings; item-id inputs).
CF_DATASETS = ("jester", "movielens100k", "movielens1m")

# The selector arguments of a stage script; everything else on its command line is an override.
SELECTORS = ("learner", "benchmark", "dataset")


class ConfigError(ValueError):
    """A parameter is missing, unknown, mistyped or out of range; the message says how to fix it."""


# Value rules, kept as field metadata and checked by the generic validator (_build):
#   ge / gt / lt: bounds on a number, or on each number of a list;
#   min_len / unique: on a list;  ordered: "<" or "<=" between lo and hi of a pair (lo, hi).
AT_LEAST_1 = {"ge": 1}
POSITIVE = {"gt": 0}
RANGE = {"ordered": "<"}
RANGE_OR_POINT = {"ordered": "<="}  # lo == hi: a fixed value instead of a sampled one


# --------------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class LearnerSection:
    """``algo.<learner>``: per-learner values of shared keys; null = use the shared key
    (``algo.steps``, ``algo.inner_lr``, ``eval.steps``, ``train.iterations``)."""

    steps: int | None = field(metadata=AT_LEAST_1)
    inner_lr: float | None = field(metadata=POSITIVE)
    eval_steps: int | None = field(metadata=AT_LEAST_1)
    iterations: int | None = field(metadata=AT_LEAST_1)  # over train.iterations
    meta_lr: float | None = field(metadata=POSITIVE)  # over train.meta_lr


@dataclass(frozen=True)
class IMAMLSection(LearnerSection):
    lam: float = field(metadata=POSITIVE)
    cg_steps: int = field(metadata=AT_LEAST_1)


@dataclass(frozen=True)
class AdjointSection(LearnerSection):
    scheme: Literal["heun", "euler"]
    trajectory: Literal["store", "checkpoint", "reverse"]
    checkpoint_every: int | None = field(metadata=AT_LEAST_1)


@dataclass(frozen=True)
class BiasSection(LearnerSection):
    """The classical CF baseline's candidate shrinkages, chosen on meta-val."""

    item_shrinkage: list[float] = field(metadata={"ge": 0, "min_len": 1})
    user_shrinkage: list[float] = field(metadata={"ge": 0, "min_len": 1})


@dataclass(frozen=True)
class AlgoConfig:
    steps: int = field(metadata=AT_LEAST_1)
    inner_lr: float = field(metadata=POSITIVE)
    adapt: Literal["all", "head"]
    maml: LearnerSection
    fomaml: LearnerSection
    reptile: LearnerSection
    imaml: IMAMLSection
    adjoint: AdjointSection
    pretrain: LearnerSection
    scratch: LearnerSection
    bias: BiasSection


@dataclass(frozen=True)
class ModelConfig:
    hidden: list[int] = field(metadata={"ge": 1, "min_len": 1})
    activation: Literal["tanh", "relu"]
    filters: int = field(metadata=AT_LEAST_1)
    cf: Literal["factors", "mlp"]  # the collaborative-filtering model (models.py)
    item_dim: int = field(metadata={"ge": 0})  # learned item-embedding width of "factors"


@dataclass(frozen=True)
class TrainConfig:
    meta_lr: float = field(metadata=POSITIVE)
    meta_batch: int = field(metadata=AT_LEAST_1)
    iterations: int = field(metadata=AT_LEAST_1)
    val_every: int = field(metadata=AT_LEAST_1)
    seed: int
    seeds: int = field(metadata=AT_LEAST_1)  # training seeds: seed, seed + 1, ...
    device: Literal["auto", "cpu", "cuda"]
    threads: int = field(metadata={"ge": 0})
    workers: int = field(metadata=AT_LEAST_1)  # processes meta-training at once (parallel.py)


@dataclass(frozen=True)
class EvalConfig:
    tasks: int = field(metadata=AT_LEAST_1)
    steps: int | None = field(metadata=AT_LEAST_1)
    confidence: float = field(metadata={"gt": 0, "lt": 1})


@dataclass(frozen=True)
class SyntheticSetting:
    shots: int = field(metadata=AT_LEAST_1)
    queries: int = field(metadata=AT_LEAST_1)


@dataclass(frozen=True)
class NoDownload:
    """``data.<dataset>.download`` of a dataset with no choice of files (all are fetched), or
    of a synthetic family (nothing is fetched)."""


@dataclass(frozen=True)
class JesterDownload:
    parts: list[int] = field(metadata={"ge": 1, "le": 3, "min_len": 1, "unique": True})


@dataclass(frozen=True)
class FunctionCounts:
    train: int = field(metadata=AT_LEAST_1)
    val: int = field(metadata=AT_LEAST_1)
    test: int = field(metadata=AT_LEAST_1)


class DatasetSection(Protocol):
    """What every ``data.<dataset>`` section provides."""

    settings: Mapping[str, Any]

    @property
    def meta_test_tasks(self) -> int: ...


@dataclass(frozen=True)
class CosMixtureConfig:
    download: NoDownload
    seed: int
    dim: int = field(metadata=AT_LEAST_1)
    domain: tuple[float, float] = field(metadata=RANGE)
    amplitude: tuple[float, float] = field(metadata=RANGE_OR_POINT)
    frequency: tuple[float, float] = field(metadata=RANGE_OR_POINT)
    phase: tuple[float, float] = field(metadata=RANGE_OR_POINT)
    functions: FunctionCounts
    settings: dict[str, SyntheticSetting]

    @property
    def meta_test_tasks(self) -> int:
        return self.functions.test


@dataclass(frozen=True)
class AlpineConfig:
    download: NoDownload
    seed: int
    dim: int = field(metadata=AT_LEAST_1)
    domain: tuple[float, float] = field(metadata=RANGE)
    phase: tuple[float, float] = field(metadata=RANGE_OR_POINT)
    functions: FunctionCounts
    settings: dict[str, SyntheticSetting]

    @property
    def meta_test_tasks(self) -> int:
        return self.functions.test


FRACTION = {"gt": 0, "lt": 1}


@dataclass(frozen=True)
class FixedTasks:
    """The fixed meta-val and meta-test tasks that a real dataset's episodify writes."""

    val_tasks: int = field(metadata=AT_LEAST_1)
    test_tasks: int = field(metadata=AT_LEAST_1)

    @property
    def meta_test_tasks(self) -> int:
        return self.test_tasks


@dataclass(frozen=True)
class UserSplit:
    """Fractions of the users held out for meta-val and meta-test; the rest are meta-train."""

    val: float = field(metadata=FRACTION)
    test: float = field(metadata=FRACTION)


@dataclass(frozen=True)
class RatingSetting:
    """A collaborative-filtering setting: ``shots`` support ratings, ``queries`` query ratings."""

    shots: int = field(metadata=AT_LEAST_1)
    queries: int = field(metadata=AT_LEAST_1)


@dataclass(frozen=True)
class JesterConfig(FixedTasks):
    download: JesterDownload
    seed: int
    users: UserSplit
    settings: dict[str, RatingSetting]


@dataclass(frozen=True)
class MovieLensConfig(FixedTasks):
    download: NoDownload
    seed: int
    users: UserSplit
    embedding_dim: int = field(metadata=AT_LEAST_1)
    settings: dict[str, RatingSetting]


@dataclass(frozen=True)
class ClassSplit:
    """Numbers of classes (Omniglot characters) for meta-train, meta-val and meta-test."""

    train: int = field(metadata=AT_LEAST_1)
    val: int = field(metadata=AT_LEAST_1)
    test: int = field(metadata=AT_LEAST_1)


@dataclass(frozen=True)
class FewShotSetting:
    """N-way K-shot classification with ``queries`` query images per class."""

    ways: int = field(metadata={"ge": 2})
    shots: int = field(metadata=AT_LEAST_1)
    queries: int = field(metadata=AT_LEAST_1)  # per class, in the fixed meta-val/test tasks
    # per class in meta-training tasks; null = queries
    train_queries: int | None = field(metadata=AT_LEAST_1)


@dataclass(frozen=True)
class OmniglotConfig(FixedTasks):
    download: NoDownload
    seed: int
    image_size: int = field(metadata=AT_LEAST_1)
    classes: ClassSplit
    rotations: bool
    settings: dict[str, FewShotSetting]


@dataclass(frozen=True)
class MiniImageNetConfig(FixedTasks):
    download: NoDownload
    seed: int
    settings: dict[str, FewShotSetting]


@dataclass(frozen=True)
class DataConfig:
    """One field per dataset; a benchmark is ``"<field>-<setting>"``."""

    cosmixture: CosMixtureConfig
    alpine: AlpineConfig
    jester: JesterConfig
    movielens100k: MovieLensConfig
    movielens1m: MovieLensConfig
    omniglot: OmniglotConfig
    miniimagenet: MiniImageNetConfig


#: The sections a benchmark's entry may override (see :func:`benchmark_config`).
OVERRIDABLE = ("algo", "model", "train", "eval")


@dataclass(frozen=True)
class BenchmarkEntry:
    """``pipeline.benchmarks.<name>``: the parts of the name, spelled out for dvc.yaml, and the
    benchmark's own protocol: optional partial ``algo``/``model``/``train``/``eval`` sections
    whose keys replace the top-level ones for this benchmark only (:func:`benchmark_config`)."""

    dataset: str
    setting: str
    algo: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineConfig:
    learners: list[Learner] = field(metadata={"min_len": 1, "unique": True})
    cf_learners: list[Learner] = field(metadata={"unique": True})
    cf_benchmarks: list[str] = field(metadata={"unique": True})
    datasets: list[str] = field(metadata={"min_len": 1, "unique": True})
    benchmarks: dict[str, BenchmarkEntry] = field(metadata={"min_len": 1})


#: The problems of the efficiency stage (:mod:`metalearn.efficiency`): the shapes of two benchmarks.
EFFICIENCY_PROBLEMS = ("cf_mlp", "omniglot_conv4")


@dataclass(frozen=True)
class EfficiencyVariant:
    """``efficiency.variants.<name>``: a meta-learner and the options it is built with (e.g. the
    adjoint's ``scheme`` and ``trajectory``); ``steps`` and ``inner_lr`` come from the stage."""

    learner: Literal["maml", "fomaml", "reptile", "imaml", "adjoint"]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PeerProblem:
    meta_batch: int = field(metadata=AT_LEAST_1)
    steps: int = field(metadata=AT_LEAST_1)


@dataclass(frozen=True)
class EfficiencyConfig:
    """``efficiency``: what the efficiency stage measures (README "Efficiency")."""

    device: Literal["auto", "cpu", "cuda"]
    steps: list[int] = field(metadata={"ge": 1, "min_len": 1, "unique": True})
    meta_batch: dict[str, int] = field(metadata={"min_len": 1})  # problem -> tasks per step
    variants: dict[str, EfficiencyVariant] = field(metadata={"min_len": 1})
    seconds: float = field(metadata=POSITIVE)  # a point's budget, its process start included
    memory_gib: float = field(metadata=POSITIVE)  # a point's address-space budget (CPU)
    repeats: int = field(metadata=AT_LEAST_1)
    accuracy_steps: list[int] = field(metadata={"ge": 1, "min_len": 1, "unique": True})
    accuracy_meta_batch: int = field(metadata=AT_LEAST_1)
    peers: dict[str, PeerProblem]
    peer_seconds: float = field(metadata=POSITIVE)


@dataclass(frozen=True)
class TuneConfig:
    """Stage ``tune@<benchmark>`` (:mod:`metalearn.tuning`): one grid and one budget for all."""

    benchmarks: list[str] = field(metadata={"unique": True})
    learners: list[Learner] = field(metadata={"min_len": 1, "unique": True})
    inner_lr: list[float] = field(metadata={"gt": 0, "min_len": 1, "unique": True})
    meta_lr: list[float] = field(metadata={"gt": 0, "min_len": 1, "unique": True})
    iterations: int = field(metadata=AT_LEAST_1)


@dataclass(frozen=True)
class Config:
    pipeline: PipelineConfig
    algo: AlgoConfig
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    data: DataConfig
    efficiency: EfficiencyConfig
    tune: TuneConfig


# ------------------------------------------------------------------------------------- validation


_NO_RULES: Mapping[str, Any] = types.MappingProxyType({})


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _show(value: Any) -> str:
    """A value as written in YAML / on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _optional_inner(tp: Any) -> Any:
    """``X`` for ``X | None``, else None."""
    if get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0]
        raise TypeError(f"unsupported union {tp}: only X | None")
    return None


# The bound rules: name -> (how it reads, the test).
_BOUNDS = {
    "ge": (">=", operator.ge),
    "gt": (">", operator.gt),
    "le": ("<=", operator.le),
    "lt": ("<", operator.lt),
}


def _item_rules(rules: Mapping[str, Any]) -> dict[str, Any]:
    """The rules of a list that apply to each of its items."""
    return {k: v for k, v in rules.items() if k in _BOUNDS}


def _in_bounds(value: float, rules: Mapping[str, Any]) -> bool:
    return all(test(value, rules[key]) for key, (_, test) in _BOUNDS.items() if key in rules)


def _describe(tp: Any, rules: Mapping[str, Any] = _NO_RULES) -> str:
    """What ``tp`` with ``rules`` allows, in words, after 'must be'."""
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    if tp is Any:
        return "any value"
    if (inner := _optional_inner(tp)) is not None:
        return "null or " + _describe(inner, rules)
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is list:
        kind = "a non-empty list" if rules.get("min_len") else "a list"
        unique = " without repeats" if rules.get("unique") else ""
        return f"{kind}{unique}, each item {_describe(args[0], _item_rules(rules))}"
    if origin is tuple:  # the pairs (lo, hi)
        order = f", with lo {rules['ordered']} hi" if "ordered" in rules else ""
        return f"a list [lo, hi], each {_describe(args[0], _item_rules(rules))}{order}"
    if origin is dict:
        kind = "a non-empty mapping" if rules.get("min_len") else "a mapping"
        return f"{kind} from names to {_describe(args[1])}"
    words = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}
    bounds = " and ".join(f"{op} {rules[key]}" for key, (op, _) in _BOUNDS.items() if key in rules)
    return f"{words[tp]} {bounds}".strip()


def _build(
    tp: Any, value: Any, path: str, rules: Mapping[str, Any] = _NO_RULES, expected: Any = None
) -> Any:
    """Validate ``value`` (plain YAML data) against the type hint ``tp`` and the value ``rules``;
    return it converted (dataclasses built, ints widened to float, lists to tuples for pairs).
    ``expected`` is the type named in the error message (the outer ``X | None``)."""

    def fail() -> typing.NoReturn:
        where = path or "the parameters"
        raise ConfigError(f"{where} = {_show(value)}: must be {_describe(expected or tp, rules)}")

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            fail()
        names = [f.name for f in dataclasses.fields(tp)]
        for key in value:
            if key not in names:
                raise ConfigError(f"unknown key '{_join(path, key)}' (valid: {', '.join(names)})")
        hints = get_type_hints(tp)
        built = {}
        for f in dataclasses.fields(tp):
            if f.name not in value and f.default_factory is not dataclasses.MISSING:
                built[f.name] = f.default_factory()  # an optional section, absent
                continue
            if f.name not in value:
                raise ConfigError(f"missing key '{_join(path, f.name)}'")
            built[f.name] = _build(hints[f.name], value[f.name], _join(path, f.name), f.metadata)
        return tp(**built)

    if (inner := _optional_inner(tp)) is not None:
        return None if value is None else _build(inner, value, path, rules, expected or tp)

    origin, args = get_origin(tp), get_args(tp)
    if origin is list:
        if not isinstance(value, list | tuple) or len(value) < rules.get("min_len", 0):
            fail()
        items = [
            _build(args[0], v, f"{path}[{i}]", _item_rules(rules)) for i, v in enumerate(value)
        ]
        if rules.get("unique") and len(set(items)) < len(items):
            fail()
        return items
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            fail()
        items = tuple(
            _build(a, v, f"{path}[{i}]", _item_rules(rules))
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
        order = rules.get("ordered")
        if (order == "<" and not items[0] < items[1]) or (order == "<=" and items[0] > items[1]):
            fail()
        return items
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            fail()
        if len(value) < rules.get("min_len", 0):
            fail()
        return {k: _build(args[1], v, _join(path, k)) for k, v in value.items()}

    if tp is Any:  # checked by whoever reads it (a benchmark's overrides: benchmark_config)
        return value

    # Scalars.
    if origin is Literal:
        ok = any(value == a and type(value) is type(a) for a in args)
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = type(value) is int and _in_bounds(value, rules)
    elif tp is float:
        ok = type(value) in (int, float) and math.isfinite(value) and _in_bounds(value, rules)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"unsupported type {tp} for {path}")
    if not ok:
        fail()
    return value


def _check_config(cfg: Config) -> None:
    """The rules that involve more than one key."""
    _check_efficiency(cfg.efficiency)
    _check_cf(cfg.pipeline)
    _check_tune(cfg)
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


def _check_cf(pipeline: PipelineConfig) -> None:
    """``cf_learners`` run on ``cf_benchmarks`` only, which must be rating benchmarks."""
    for learner in pipeline.learners:
        if learner in CF_ONLY_LEARNERS:
            raise ConfigError(
                f"pipeline.learners lists {learner!r}, which applies to collaborative filtering "
                "only: list it under pipeline.cf_learners instead"
            )
    for learner in pipeline.cf_learners:
        if learner not in CF_ONLY_LEARNERS:
            raise ConfigError(
                f"pipeline.cf_learners lists {learner!r}: it takes only "
                f"{', '.join(CF_ONLY_LEARNERS)}; list {learner!r} under pipeline.learners"
            )
    for name in pipeline.cf_benchmarks:
        entry = pipeline.benchmarks.get(name)
        if entry is None or entry.dataset not in CF_DATASETS:
            cf = [b for b, e in pipeline.benchmarks.items() if e.dataset in CF_DATASETS]
            raise ConfigError(
                f"pipeline.cf_benchmarks lists {name!r}, which is not a collaborative-filtering "
                f"benchmark of pipeline.benchmarks (those are: {', '.join(cf) or 'none'})"
            )


def _check_tune(cfg: Config) -> None:
    for name in cfg.tune.benchmarks:
        if name not in cfg.pipeline.benchmarks:
            raise ConfigError(
                f"tune.benchmarks lists {name!r}, which is not in pipeline.benchmarks "
                f"({', '.join(cfg.pipeline.benchmarks)})"
            )
    for learner in cfg.tune.learners:
        if learner in CF_ONLY_LEARNERS:
            raise ConfigError(
                f"tune.learners lists {learner!r}: its train stage already chooses its "
                "shrinkages on meta-val; tune only gradient-trained learners"
            )


def learners_of(cfg: Config, benchmark: str) -> list[str]:
    """The learners that run on ``benchmark``: ``pipeline.learners``, and ``cf_learners`` on
    the ``cf_benchmarks``."""
    extra = cfg.pipeline.cf_learners if benchmark in cfg.pipeline.cf_benchmarks else []
    return [*cfg.pipeline.learners, *extra]


def _check_efficiency(eff: EfficiencyConfig) -> None:
    valid = ", ".join(EFFICIENCY_PROBLEMS)
    for key, table in (("meta_batch", eff.meta_batch), ("peers", eff.peers)):
        for problem, value in table.items():
            if problem not in EFFICIENCY_PROBLEMS:
                raise ConfigError(f"unknown problem 'efficiency.{key}.{problem}' (valid: {valid})")
            if isinstance(value, int) and value < 1:
                raise ConfigError(f"efficiency.{key}.{problem} = {value}: must be an integer >= 1")
    _check_cuda(eff.device, "efficiency.device = 'cuda'")


def _check_cuda(device: str, setting: str) -> None:
    """A ``cuda`` device needs a visible GPU; ``setting`` names the key in the message."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{setting} but no CUDA GPU is visible; use 'auto' or 'cpu'")


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
        return _build(Config, data, "")
    except ConfigError as e:
        raise ConfigError(f"pipeline.benchmarks.{benchmark} (its overrides): {e}") from None


def build_config(data: Mapping[str, Any]) -> Config:
    """Validate plain parameters (as in ``params.yaml``) into a :class:`Config`."""
    cfg = _build(Config, data, "")
    _check_config(cfg)
    return cfg


# ---------------------------------------------------------------------------------------- loading


def default_params_path() -> Path:
    """The first ``params.yaml`` from the working directory upwards, else ``$DVC_ROOT``'s, else
    the one of this source checkout. DVC runs a stage in its repository's root, and for a
    temporary or queued experiment (``dvc exp run --temp`` / ``--queue``) in a copy under
    ``.dvc/tmp/`` whose ``params.yaml`` holds the ``-S`` changes, while ``DVC_ROOT`` names the
    parent repository: the working directory is the one to trust."""
    cwd = Path.cwd().resolve()
    for directory in (cwd, *cwd.parents):
        if (directory / PARAMS_FILE).is_file():
            return directory / PARAMS_FILE
    if root := os.environ.get("DVC_ROOT"):
        return Path(root).resolve() / PARAMS_FILE
    return Path(__file__).resolve().parents[2] / PARAMS_FILE


def _unknown_key_error(error: ConfigCompositionException, params: Path) -> ConfigError:
    """Turn Hydra's 'Could not override' into a message naming the key and the valid ones."""
    key = getattr(error.__cause__, "full_key", None)
    if not key:
        return ConfigError(f"cannot apply the overrides: {error}")
    parent, _, _ = key.rpartition(".")
    node: Any = OmegaConf.to_container(OmegaConf.load(params))
    for segment in parent.split(".") if parent else ():
        node = node.get(segment) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return ConfigError(f"unknown key '{key}': '{parent}' is a value, not a section")
    where = f"under '{parent}'" if parent else "at the top level"
    return ConfigError(
        f"unknown key '{key}'; valid keys {where}: {', '.join(map(str, node))}. "
        f"Fix the spelling: {params.name} lists every parameter, so new keys are not accepted."
    )


def _compose(params: Path, overrides: list[str]) -> dict[str, Any]:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(params.parent), version_base=None):
            composed = compose(config_name=params.stem, overrides=overrides)
        data = OmegaConf.to_container(composed, resolve=True)
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse the overrides {overrides}: {e}") from e
    except ConfigCompositionException as e:
        raise _unknown_key_error(e, params) from e
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"cannot load {params}: {e}") from e
    finally:
        GlobalHydra.instance().clear()
    if not isinstance(data, dict):
        raise ConfigError(f"{params} must hold a mapping of sections")
    return data


def load_config(overrides: Sequence[str] = (), params_path: str | Path | None = None) -> Config:
    """Compose ``params.yaml`` (default: :func:`default_params_path`) with Hydra ``overrides``
    (e.g. ``["algo.steps=100"]``) and validate it; raises :class:`ConfigError`."""
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of strings, not one string")
    params = Path(params_path).resolve() if params_path is not None else default_params_path()
    if not params.is_file():
        raise ConfigError(f"parameter file not found: {params}")
    if params.suffix != ".yaml":
        raise ConfigError(f"parameter file must end in .yaml (Hydra's rule): {params}")
    return build_config(_compose(params, list(overrides)))


# ------------------------------------------------------------------------------------ consumers


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


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Nested mappings as one ``{"a.b.c": leaf}`` mapping."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node

    walk("", tree)
    return flat


def split_cli(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split a stage's arguments into the selectors (``learner=<name>``, ``benchmark=<name>``)
    and the Hydra overrides (everything else, e.g. ``algo.steps=100``)."""
    selected: dict[str, str] = {}
    overrides: list[str] = []
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep and not item.startswith("~"):  # "~key" is Hydra's deletion
            raise ConfigError(
                f"argument {item!r} is not KEY=VALUE; expected "
                f"{' '.join(f'{s}=<name>' for s in SELECTORS)} and overrides such as algo.steps=10"
            )
        if key not in SELECTORS:
            overrides.append(item)
        elif key in selected or not value:
            raise ConfigError(f"{item!r}: give {key}=<name> once, with a non-empty name")
        else:
            selected[key] = value
    return selected, overrides


__all__ = [
    "CF_DATASETS",
    "CF_ONLY_LEARNERS",
    "LEARNERS",
    "AdjointSection",
    "AlgoConfig",
    "BiasSection",
    "AlpineConfig",
    "Config",
    "ConfigError",
    "CosMixtureConfig",
    "DataConfig",
    "DatasetSection",
    "EvalConfig",
    "FunctionCounts",
    "IMAMLSection",
    "LearnerSection",
    "ModelConfig",
    "PipelineConfig",
    "SyntheticSetting",
    "TrainConfig",
    "TuneConfig",
    "all_benchmarks",
    "benchmark_config",
    "build_config",
    "dataset_config",
    "default_params_path",
    "eval_steps",
    "flatten",
    "iterations",
    "learner_options",
    "learners_of",
    "load_config",
    "meta_lr",
    "parse_benchmark",
    "resolve_device",
    "split_cli",
]
