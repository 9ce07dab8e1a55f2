"""Paired comparisons of learners scored on the same meta-test tasks.

Every learner of a benchmark is scored on the same fixed meta-test tasks, so two learners'
scores pair up task by task and their difference ``d_i = a_i - b_i`` removes the spread between
tasks (an easy task is easy for both). Per pair: the mean difference with its Student-t interval
and the two-sided Wilcoxon signed-rank test of ``d`` (no normality assumed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from metalearn.algorithms import BASELINES
from metalearn.metrics import mean_ci

ALPHA = 0.05  # significance level of every test here
POWER = 0.8  # the power at which a comparison states the smallest difference it detects

Verdict = Literal["agrees", "reversed", "tie"]


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` on ``n`` paired tasks: ``difference`` = mean of ``a_i - b_i``, ``ci``
    its Student-t half-width, ``p`` the two-sided Wilcoxon signed-rank p-value, ``detectable``
    the smallest mean difference these tasks detect at :data:`POWER`
    (:func:`detectable_difference`): a tie rules out differences larger than that."""

    difference: float
    ci: float
    p: float
    n: int
    higher_is_better: bool
    detectable: float = math.nan

    @property
    def significant(self) -> bool:
        return self.p < ALPHA

    @property
    def a_better(self) -> bool:
        """The mean difference points ``a``'s way (not necessarily significantly)."""
        return self.difference > 0 if self.higher_is_better else self.difference < 0

    @property
    def a_worse(self) -> bool:
        return self.difference < 0 if self.higher_is_better else self.difference > 0


def paired_comparison(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    *,
    higher_is_better: bool,
) -> Comparison:
    """Compare per-task scores ``a`` and ``b`` (same tasks, same order).

    ``d_i = a_i - b_i``; ``difference = mean(d)``, ``ci = t_{(1+confidence)/2, n-1} s_d / sqrt(n)``
    (:func:`metalearn.metrics.mean_ci`), ``p`` = two-sided Wilcoxon signed-rank p-value of ``d``
    (zero differences dropped, :func:`scipy.stats.wilcoxon`); ``p = 1`` when every ``d_i`` is 0
    (e.g. a learner against itself), where the test is undefined.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"paired scores need two equal-length 1-d arrays, got {a.shape}, {b.shape}"
        )
    d = a - b
    difference, ci = mean_ci(d, confidence)
    if np.all(d == 0):
        p = 1.0
    else:
        from scipy import stats  # 1-2 s to import: only what reports pays it

        p = float(stats.wilcoxon(d).pvalue)
    detectable = detectable_difference(d, 1 - confidence)
    return Comparison(difference, ci, p, d.size, higher_is_better, detectable)


def detectable_difference(
    differences: Sequence[float] | np.ndarray, alpha: float = ALPHA, power: float = POWER
) -> float:
    """The smallest mean paired difference that a two-sided test at level ``alpha`` finds with
    probability ``power``, for differences as spread as these over as many tasks:
    ``(t_{1 - alpha/2, n-1} + t_{power, n-1}) s_d / sqrt(n)`` (the paired t-test's; the
    signed-rank test has efficiency 3/pi against it on normal differences, so it needs about
    5 % more tasks for the same power). NaN for fewer than two tasks."""
    d = np.asarray(differences, dtype=np.float64).reshape(-1)
    if d.size < 2:
        return math.nan
    from scipy import stats  # (likewise)

    quantiles = stats.t.ppf(1 - alpha / 2, d.size - 1) + stats.t.ppf(power, d.size - 1)
    return float(quantiles * d.std(ddof=1) / math.sqrt(d.size))


@dataclass(frozen=True)
class LearnerComparison:
    """One learner of a benchmark against the best learner and against each baseline."""

    mean: float
    vs_best: Comparison
    vs_baselines: dict[str, Comparison]

    @property
    def not_worse(self) -> bool:
        """Not significantly worse than the best: ``p >= ALPHA`` or the difference points the
        better way (a tie with the best)."""
        return not (self.vs_best.significant and self.vs_best.a_worse)


@dataclass(frozen=True)
class BenchmarkComparison:
    """Every learner of one benchmark: ``best`` is the learner with the best mean score."""

    best: str
    learners: dict[str, LearnerComparison]


def best_learner(scores: Mapping[str, np.ndarray], higher_is_better: bool) -> str:
    """The learner with the highest (``higher_is_better``) or lowest mean score."""
    pick = max if higher_is_better else min
    return pick(scores, key=lambda name: float(np.mean(scores[name])))


def compare_learners(
    scores: Mapping[str, np.ndarray],
    higher_is_better: bool,
    confidence: float = 0.95,
    baselines: Sequence[str] = BASELINES,
) -> BenchmarkComparison:
    """Each learner's per-task ``scores`` against the best learner's and against each baseline
    of ``baselines`` that ``scores`` has (:func:`paired_comparison`: learner minus other)."""
    best = best_learner(scores, higher_is_better)
    present = [b for b in baselines if b in scores]

    def compare(name: str, other: str) -> Comparison:
        return paired_comparison(
            scores[name], scores[other], confidence, higher_is_better=higher_is_better
        )

    learners = {
        name: LearnerComparison(
            float(np.mean(s)), compare(name, best), {b: compare(name, b) for b in present}
        )
        for name, s in scores.items()
    }
    return BenchmarkComparison(best, learners)


# ------------------------------------------------------------------------------- papers' claims


@dataclass(frozen=True)
class Claim:
    """A paper's claim "``better`` beats ``worse``" and how our paired scores judge it:
    ``comparison`` is ``better`` minus ``worse``."""

    better: str
    worse: str
    comparison: Comparison

    @property
    def verdict(self) -> Verdict:
        """``agrees``: significant (p < ALPHA) with the mean difference the claimed way;
        ``reversed``: significant the other way; ``tie`` otherwise."""
        c = self.comparison
        if c.significant and c.a_better:
            return "agrees"
        return "reversed" if c.significant and c.a_worse else "tie"


def claimed_pairs(published: Mapping[str, float], higher_is_better: bool) -> list[tuple[str, str]]:
    """``(better, worse)`` for every pair of learners whose ``published`` values differ, the
    better one first, ordered by the better one's published value then the worse one's."""
    sign = -1.0 if higher_is_better else 1.0
    order = sorted(published, key=lambda name: sign * published[name])
    return [
        (x, y) for i, x in enumerate(order) for y in order[i + 1 :] if published[x] != published[y]
    ]


def check_claims(
    scores: Mapping[str, np.ndarray],
    published: Mapping[str, float],
    higher_is_better: bool,
    confidence: float = 0.95,
) -> list[Claim]:
    """Every claim of :func:`claimed_pairs` between learners that ``scores`` has, judged on the
    paired per-task scores."""
    found = {name: v for name, v in published.items() if name in scores}
    return [
        Claim(
            x,
            y,
            paired_comparison(scores[x], scores[y], confidence, higher_is_better=higher_is_better),
        )
        for x, y in claimed_pairs(found, higher_is_better)
    ]


def verdict_counts(claims: Sequence[Claim]) -> dict[str, int]:
    """``{"agrees": n, "tie": n, "reversed": n}``."""
    return {v: sum(c.verdict == v for c in claims) for v in ("agrees", "tie", "reversed")}


__all__ = [
    "ALPHA",
    "POWER",
    "BASELINES",
    "BenchmarkComparison",
    "Claim",
    "Comparison",
    "LearnerComparison",
    "best_learner",
    "check_claims",
    "claimed_pairs",
    "compare_learners",
    "detectable_difference",
    "paired_comparison",
    "verdict_counts",
]
