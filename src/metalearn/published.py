"""The published numbers the study is compared with, and the protocols that produced them.

Transcribed from the lecture notes in ``../shared/seeds/`` (seed 000: Adjoint MAML; seed 001:
iMAML, which quotes MAML, first-order MAML and Reptile). ``tests/test_published.py`` checks that
the default ``params.yaml`` runs these protocols.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PublishedTable:
    """One table of a paper: ``rows[paper row][benchmark] = (mean, ± as printed)``."""

    source: str
    rows: dict[str, dict[str, tuple[float, float]]]
    note: str = ""
    #: for a protocol-dependent table: the inner steps K it used (``"*"``: every other learner)
    steps: dict[str, int] = field(default_factory=dict)


CF = (
    "jester-shot10",
    "jester-shot20",
    "movielens100k-shot10",
    "movielens100k-shot20",
    "movielens1m-shot10",
    "movielens1m-shot20",
)


def _cf(text: str) -> dict[str, dict[str, tuple[float, float]]]:
    """Rows as printed, ``name mean ci mean ci ...`` in the column order of :data:`CF`."""
    rows = {}
    for line in text.strip().splitlines():
        name, *values = line.split()
        numbers = [float(v) for v in values]
        rows[name] = {b: (numbers[2 * i], numbers[2 * i + 1]) for i, b in enumerate(CF)}
    return rows


# Adjoint MAML paper, "Meta Collaborative Filtering" (seed 000): meta-test nRMSE, 100 tasks.
CF_TABLE_1 = PublishedTable(
    "Adjoint MAML paper, Table 1 (seed 000): K = 50 inner steps, MAML K = 5",
    _cf("""
        A-MAML   0.074 0.005  0.027 0.002  0.053 0.005  0.023 0.003  0.094 0.008  0.035 0.004
        iMAML    0.114 0.007  0.050 0.003  0.082 0.004  0.033 0.002  0.138 0.010  0.052 0.004
        MAML     0.120 0.001  0.036 0.000  0.123 0.001  0.050 0.003  0.140 0.002  0.059 0.001
        FOMAML   0.292 0.012  0.115 0.004  0.174 0.008  0.068 0.004  0.270 0.011  0.104 0.006
        Reptile  0.270 0.012  0.106 0.004  0.166 0.008  0.063 0.003  0.266 0.011  0.101 0.006
    """),
    steps={"maml": 5, "*": 50},
)
CF_TABLE_2 = PublishedTable(
    "Adjoint MAML paper, Table 2 (seed 000): K = 100 inner steps, MAML K = 10",
    _cf("""
        A-MAML   0.069 0.005  0.044 0.003  0.057 0.006  0.021 0.002  0.105 0.009  0.035 0.004
        iMAML    0.190 0.010  0.103 0.005  0.168 0.007  0.046 0.002  0.130 0.007  0.045 0.004
        MAML     0.154 0.001  0.061 0.002  0.123 0.001  0.050 0.002  0.197 0.002  0.083 0.001
        FOMAML   0.273 0.012  0.077 0.004  0.191 0.007  0.071 0.004  0.395 0.010  0.119 0.005
        Reptile  0.290 0.012  0.100 0.004  0.171 0.008  0.066 0.004  0.408 0.011  0.128 0.006
    """),
    steps={"maml": 10, "*": 100},
)

OMNIGLOT = (
    "omniglot-way5shot1",
    "omniglot-way5shot5",
    "omniglot-way20shot1",
    "omniglot-way20shot5",
)

# iMAML paper, Table 2 (seed 001): Omniglot accuracy in %.
OMNIGLOT_TABLE = PublishedTable(
    "iMAML paper, Table 2 (seed 001); MAML and first-order MAML from Finn et al., Reptile from "
    "Nichol et al.",
    {
        name: dict(zip(OMNIGLOT, cells, strict=True))
        for name, cells in {
            "MAML": [(98.7, 0.4), (99.9, 0.1), (95.8, 0.3), (98.9, 0.2)],
            "first-order MAML": [(98.3, 0.5), (99.2, 0.2), (89.4, 0.5), (97.9, 0.1)],
            "Reptile": [(97.68, 0.04), (99.48, 0.06), (89.43, 0.14), (97.12, 0.32)],
            "iMAML, GD": [(99.16, 0.35), (99.67, 0.12), (94.46, 0.42), (98.69, 0.1)],
            "iMAML, Hessian-Free": [(99.50, 0.26), (99.74, 0.11), (96.18, 0.36), (99.14, 0.1)],
        }.items()
    },
)

# iMAML paper, Table 3 (seed 001): MiniImageNet 5-way 1-shot accuracy in %.
MINIIMAGENET_TABLE = PublishedTable(
    "iMAML paper, Table 3 (seed 001)",
    {
        "MAML": {"miniimagenet-way5shot1": (48.70, 1.84)},
        "first-order MAML": {"miniimagenet-way5shot1": (48.07, 1.75)},
        "Reptile": {"miniimagenet-way5shot1": (49.97, 0.32)},
        "iMAML, GD": {"miniimagenet-way5shot1": (48.96, 1.84)},
        "iMAML, Hessian-Free": {"miniimagenet-way5shot1": (49.30, 1.88)},
    },
    note="The seed's text lost the label of the first-order MAML row (48.07 ± 1.75 is printed "
    "under Reptile's); the seeds give no 5-shot numbers.",
)


@dataclass(frozen=True)
class PaperProtocol:
    """What a paper ran for a benchmark, for the report's list of differences."""

    maml_steps: int
    maml_eval_steps: int
    inner_lr: float | None  # None: not stated in the seeds
    meta_batch: int | None
    filters: int | None = None
    imaml_steps: int | None = None
    other_steps: int | None = None  # K of the other learners (CF)


def paper_protocol(benchmark: str) -> PaperProtocol | None:
    dataset, _, setting = benchmark.partition("-")
    if dataset in ("jester", "movielens100k", "movielens1m", "cosmixture", "alpine"):
        return PaperProtocol(5, 5, None, None, other_steps=50)
    if dataset == "omniglot" and setting.startswith("way5"):
        return PaperProtocol(1, 3, 0.4, 32, filters=64, imaml_steps=16)
    if dataset == "omniglot" and setting.startswith("way20"):
        return PaperProtocol(5, 5, 0.1, 16, filters=64, imaml_steps=25)
    if dataset == "miniimagenet":
        return PaperProtocol(5, 10, 0.01, 4, filters=32)
    return None


# The data the papers used, against which the run's counts are compared.
PAPER_DATA = {
    "omniglot": ("characters", 1623),
    "jester": ("users", 73421),  # Jester-1, all three parts
    "movielens100k": ("ratings", 100000),
    "movielens1m": ("ratings", 1000209),
}

BATCH_NORM_NOTE = (
    "Conv4 batch norm uses each task's batch statistics, in the inner loop and at meta-test, and "
    "keeps no running statistics (as the MAML reference code); its scale and shift are adapted "
    "like every other parameter."
)
