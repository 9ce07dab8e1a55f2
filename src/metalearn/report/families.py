"""The papers' tables: which benchmarks the report shows together (a :class:`Family`) in which
paper's column order, with which published numbers and ranking of the meta-learners, and which
of our learners a published row is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from metalearn import published
from metalearn.config import Config, benchmark_config
from metalearn.config.learners import learner_options

# A published row -> our learner of the same name.
PAPER_ROWS = {
    "A-MAML": "adjoint",
    "iMAML": "imaml",
    "MAML": "maml",
    "FOMAML": "fomaml",
    "Reptile": "reptile",
    "first-order MAML": "fomaml",
    "iMAML, GD": "imaml",
    "iMAML, Hessian-Free": "imaml",
}

# The Adjoint MAML paper's ranking in nRMSE (seed 000: Table 1 and the synthetic-regression
# figures), best first: A-MAML < iMAML < MAML < {Reptile, FOMAML} (one tuple: not ordered).
ADJOINT_RANKING = (("adjoint",), ("imaml",), ("maml",), ("fomaml", "reptile"))


@dataclass(frozen=True)
class Family:
    """Benchmarks reported in one table, in the column order of the paper's table."""

    title: str
    columns: tuple[str, ...]  # benchmark names
    headers: tuple[str, ...]  # their column titles
    percent: bool  # accuracy shown in %
    published: Callable[[Config], list[published.PublishedTable]]
    #: the paper's ranking of the meta-learners, checked where ``published`` has no numbers
    #: (empty: the family's claims are not checked)
    ranking: tuple[tuple[str, ...], ...] = ()


def _cf_tables(cfg: Config) -> list[published.PublishedTable]:
    """Table 2 when the run used its K (100, MAML 10), else Table 1."""
    table2 = published.CF_TABLE_2
    cf = [b for b in published.CF if b in cfg.pipeline.benchmarks]
    if cf and _steps_match(benchmark_config(cfg, cf[0]), table2.steps):
        return [table2]
    return [published.CF_TABLE_1]


def _steps_match(cfg: Config, steps: dict[str, int]) -> bool:
    """Whether every learner of the paper's rows ran with the table's K (the others, e.g.
    Meta-SGD and MAML++, are not in the paper and keep their own)."""
    return all(
        learner_options(cfg, name)["steps"] == steps.get(name, steps["*"])
        for name in set(PAPER_ROWS.values())
        if name in cfg.pipeline.learners
    )


FAMILIES = (
    Family(
        "Collaborative filtering: meta-test nRMSE (lower is better)",
        published.CF,
        tuple(
            f"{d} {s}"
            for d in ("Jester-1", "MovieLens100K", "MovieLens1M")
            for s in ("10shot-15val", "20shot-30val")
        ),
        percent=False,
        published=_cf_tables,
        ranking=ADJOINT_RANKING,
    ),
    Family(
        "Few-shot classification: meta-test accuracy in % (higher is better)",
        (*published.OMNIGLOT, "miniimagenet-way5shot1", "miniimagenet-way5shot5"),
        (
            "Omniglot 5-way 1-shot",
            "Omniglot 5-way 5-shot",
            "Omniglot 20-way 1-shot",
            "Omniglot 20-way 5-shot",
            "MiniImageNet 5-way 1-shot",
            "MiniImageNet 5-way 5-shot",
        ),
        percent=True,
        published=lambda cfg: [published.OMNIGLOT_TABLE, published.MINIIMAGENET_TABLE],
    ),
    Family(
        "Synthetic regression: meta-test nRMSE (lower is better)",
        ("cosmixture-shot50", "cosmixture-shot100", "alpine-shot50", "alpine-shot100"),
        (
            "CosMixture 50shot-50val",
            "CosMixture 100shot-100val",
            "Alpine 50shot-50val",
            "Alpine 100shot-100val",
        ),
        percent=False,
        published=lambda cfg: [],
        ranking=ADJOINT_RANKING,
    ),
)
