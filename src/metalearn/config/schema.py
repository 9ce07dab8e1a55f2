"""The shape of ``params.yaml``: one frozen (pydantic) dataclass per section, whose field names
are its keys and whose types say what each key allows. :func:`metalearn.config.errors.validate`
builds them from plain data."""

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, ConfigDict, Field
from pydantic.dataclasses import dataclass

from metalearn.values import (
    AtLeast1,
    Bool,
    Float,
    Fraction,
    Int,
    Name,
    NonNegative,
    Positive,
    Str,
    Weight,
)

#: The datasets of the collaborative-filtering benchmarks (ratings; item-id inputs).
CF_DATASETS = ("jester", "movielens100k", "movielens1m")

# --------------------------------------------------------------------------------- value types
# pydantic validates; metalearn.values says what a key allows (the learners' options use them too).


def _unique(items: list) -> list:
    if len(set(items)) < len(items):
        raise ValueError("must not repeat an item")
    return items


def _ordered(strict: bool) -> AfterValidator:
    def check(pair: tuple[float, float]) -> tuple[float, float]:
        lo, hi = pair
        if lo > hi or (strict and lo == hi):
            raise ValueError(f"must be [lo, hi] with lo {'<' if strict else '<='} hi")
        return pair

    return AfterValidator(check)


Unique = AfterValidator(_unique)
Range = Annotated[tuple[Float, Float], _ordered(strict=True)]
# lo == hi: a fixed value instead of a sampled one
RangeOrPoint = Annotated[tuple[Float, Float], _ordered(strict=False)]

# Every section: unknown keys are errors, every key is required unless it has a default.
section = dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))


# --------------------------------------------------------------------------------------- sections


#: The keys of ``algo`` itself; every other key of ``algo`` is a learner's section.
SHARED_ALGO_KEYS = ("steps", "inner_lr", "adapt")


@section
class AlgoConfig:
    """``algo``: the shared inner-loop keys, and each learner's section ``algo.<learner>`` as
    written (held here under ``learners``); :mod:`metalearn.config.learners` validates those
    against the learners' declared options."""

    steps: AtLeast1
    inner_lr: Positive
    adapt: Literal["all", "head"]
    learners: dict[str, Any]


def algo_from_params(algo: Any) -> Any:
    """``algo`` as params.yaml writes it (learner sections beside the shared keys) in the shape
    of :class:`AlgoConfig`; anything but a mapping is left for validation to refuse."""
    if not isinstance(algo, Mapping):
        return algo
    shared = {k: v for k, v in algo.items() if k in SHARED_ALGO_KEYS}
    return {**shared, "learners": {k: v for k, v in algo.items() if k not in SHARED_ALGO_KEYS}}


def algo_to_params(algo: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`algo_from_params`."""
    return {**{k: v for k, v in algo.items() if k != "learners"}, **algo["learners"]}


@section
class ModelConfig:
    hidden: Annotated[list[AtLeast1], Field(min_length=1)]
    activation: Literal["tanh", "relu"]
    filters: AtLeast1
    cf: Literal["factors", "mlp"]  # the collaborative-filtering model (models.py)
    item_dim: NonNegative  # learned item-embedding width of "factors"
    # "factors" only: where its item offsets and mean start (zero and the meta-train mean, or the
    # bias baseline's fit with shrinkage item_shrinkage), and the weight decay that pulls its
    # item tables back to that start at every outer step (training.decay_items)
    item_offsets: Literal["zero", "bias"]
    item_shrinkage: Weight
    item_decay: Weight


@section
class TrainConfig:
    meta_lr: Positive
    # the outer step size over meta-training: constant, or cosine from meta_lr at the first
    # iteration to meta_lr_floor x meta_lr at the last (training.meta_lr_at)
    meta_lr_schedule: Literal["constant", "cosine"]
    meta_lr_floor: Annotated[Float, Field(ge=0, le=1)]
    meta_batch: AtLeast1
    iterations: AtLeast1
    val_every: AtLeast1
    seed: Int
    seeds: AtLeast1  # training seeds: seed, seed + 1, ...
    device: Literal["auto", "cpu", "cuda"]
    threads: NonNegative
    workers: AtLeast1  # processes meta-training at once (parallel.py)
    # torch.compile the meta-gradient (training.py); auto: for a long enough run (spec.py)
    compile: Literal["auto"] | Bool
    processes: AtLeast1  # data-parallel ranks sharing each meta-batch (distributed.py)


@section
class EvalConfig:
    tasks: AtLeast1
    steps: AtLeast1 | None
    confidence: Fraction


@section
class SyntheticSetting:
    shots: AtLeast1
    queries: AtLeast1


@section
class NoDownload:
    """``data.<dataset>.download`` of a dataset with no choice of files (all are fetched), or
    of a synthetic family (nothing is fetched)."""


@section
class JesterDownload:
    parts: Annotated[list[Annotated[Int, Field(ge=1, le=3)]], Field(min_length=1), Unique]


@section
class FunctionCounts:
    train: AtLeast1
    val: AtLeast1
    test: AtLeast1


class DatasetSection(Protocol):
    """What every ``data.<dataset>`` section provides."""

    settings: Mapping[str, Any]

    @property
    def meta_test_tasks(self) -> int: ...


@section
class CosMixtureConfig:
    download: NoDownload
    seed: Int
    dim: AtLeast1
    domain: Range
    amplitude: RangeOrPoint
    frequency: RangeOrPoint
    phase: RangeOrPoint
    functions: FunctionCounts
    settings: dict[Name, SyntheticSetting]

    @property
    def meta_test_tasks(self) -> int:
        return self.functions.test


@section
class AlpineConfig:
    download: NoDownload
    seed: Int
    dim: AtLeast1
    domain: Range
    phase: RangeOrPoint
    functions: FunctionCounts
    settings: dict[Name, SyntheticSetting]

    @property
    def meta_test_tasks(self) -> int:
        return self.functions.test


@section
class FixedTasks:
    """The fixed meta-val and meta-test tasks that a real dataset's episodify writes."""

    val_tasks: AtLeast1
    test_tasks: AtLeast1

    @property
    def meta_test_tasks(self) -> int:
        return self.test_tasks


@section
class UserSplit:
    """Fractions of the users held out for meta-val and meta-test; the rest are meta-train."""

    val: Fraction
    test: Fraction


@section
class RatingSetting:
    """A collaborative-filtering setting: ``shots`` support ratings, ``queries`` query ratings."""

    shots: AtLeast1
    queries: AtLeast1


@section
class JesterConfig(FixedTasks):
    download: JesterDownload
    seed: Int
    users: UserSplit
    settings: dict[Name, RatingSetting]


@section
class MovieLensConfig(FixedTasks):
    download: NoDownload
    seed: Int
    users: UserSplit
    embedding_dim: AtLeast1
    settings: dict[Name, RatingSetting]


@section
class ClassSplit:
    """Numbers of classes (Omniglot characters) for meta-train, meta-val and meta-test."""

    train: AtLeast1
    val: AtLeast1
    test: AtLeast1


@section
class FewShotSetting:
    """N-way K-shot classification with ``queries`` query images per class."""

    ways: Annotated[Int, Field(ge=2)]
    shots: AtLeast1
    queries: AtLeast1  # per class, in the fixed meta-val/test tasks
    train_queries: AtLeast1 | None  # per class in meta-training tasks; null = queries


@section
class OmniglotConfig(FixedTasks):
    download: NoDownload
    seed: Int
    image_size: AtLeast1
    classes: ClassSplit
    rotations: Bool
    settings: dict[Name, FewShotSetting]


@section
class MiniImageNetConfig(FixedTasks):
    download: NoDownload
    seed: Int
    settings: dict[Name, FewShotSetting]


@section
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


@section
class BenchmarkEntry:
    """``pipeline.benchmarks.<name>``: the parts of the name, spelled out for dvc.yaml, and the
    benchmark's own protocol: optional partial ``algo``/``model``/``train``/``eval`` sections
    whose keys replace the top-level ones for this benchmark only (:func:`benchmark_config`,
    which validates them)."""

    dataset: Name
    setting: Name
    algo: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    eval: dict[str, Any] = Field(default_factory=dict)


@section
class PipelineConfig:
    learners: Annotated[list[Name], Field(min_length=1), Unique]  # config.learners checks them
    cf_learners: Annotated[list[Name], Unique]
    cf_benchmarks: Annotated[list[Name], Unique]
    datasets: Annotated[list[Name], Field(min_length=1), Unique]
    benchmarks: Annotated[dict[Name, BenchmarkEntry], Field(min_length=1)]


#: The problems of the efficiency stage (:mod:`metalearn.efficiency`): the shapes of two benchmarks.
EFFICIENCY_PROBLEMS = ("cf_mlp", "omniglot_conv4")


@section
class EfficiencyVariant:
    """``efficiency.variants.<name>``: a meta-learner and the options it is built with (e.g. the
    adjoint's ``scheme`` and ``trajectory``); ``steps`` and ``inner_lr`` come from the stage."""

    learner: Str  # a meta-learner (metalearn.config.learners checks it)
    options: dict[str, Any] = Field(default_factory=dict)


@section
class PeerProblem:
    meta_batch: AtLeast1
    steps: Annotated[list[AtLeast1], Field(min_length=1), Unique]  # each K compared


StepList = Annotated[list[AtLeast1], Field(min_length=1), Unique]


@section
class EfficiencyConfig:
    """``efficiency``: what the efficiency stage measures (benchmarks/README.md "Efficiency")."""

    device: Literal["auto", "cpu", "cuda"]
    steps: StepList
    meta_batch: Annotated[dict[str, AtLeast1], Field(min_length=1)]  # problem -> tasks per step
    variants: Annotated[dict[Name, EfficiencyVariant], Field(min_length=1)]
    seconds: Positive  # a point's budget, its process start included
    memory_gib: Positive  # a point's address-space budget (CPU)
    repeats: AtLeast1
    accuracy_steps: StepList
    accuracy_meta_batch: AtLeast1
    peers: dict[str, PeerProblem]
    peer_seconds: Positive


Grid = Annotated[list[Positive], Field(min_length=1), Unique]


@section
class TuneConfig:
    """Stage ``tune@<benchmark>`` (:mod:`metalearn.tuning`): one grid and one budget for all."""

    benchmarks: Annotated[list[Name], Unique]
    learners: Annotated[list[Name], Field(min_length=1), Unique]
    inner_lr: Grid
    meta_lr: Grid
    iterations: AtLeast1
    # model keys and their candidates, crossed with the grid on the CF factors model's
    # benchmarks (the learners share the chosen point: tuning.choose_model)
    model: dict[Name, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)


@section
class Config:
    pipeline: PipelineConfig
    algo: AlgoConfig
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    data: DataConfig
    efficiency: EfficiencyConfig
    tune: TuneConfig
