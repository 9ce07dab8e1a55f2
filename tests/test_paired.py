"""Paired comparisons: difference, interval and Wilcoxon p by hand; the marks and claims."""

import math

import numpy as np
import pytest
from scipy import stats

from metalearn.paired import (
    check_claims,
    claimed_pairs,
    compare_learners,
    detectable_difference,
    paired_comparison,
    verdict_counts,
)

BASE = np.linspace(0.1, 0.3, 10, dtype=np.float64)  # per-task nRMSE of the best learner
WORSE = BASE + np.linspace(0.01, 0.1, 10)  # worse on every task: p = 2 / 2^10
TIE = BASE + 0.01 * np.array([2, -1, 3, -2, 4, -3, 5, -4, 6, -5], dtype=np.float64)  # mean +0.005


def test_difference_ci_and_p_by_hand():
    a = np.array([0.3, 0.5, 0.4, 0.6])
    b = np.array([0.1, 0.2, 0.3, 0.2])  # d = 0.2, 0.3, 0.1, 0.4
    c = paired_comparison(a, b, 0.95, higher_is_better=False)
    assert c.difference == pytest.approx(0.25)
    s = math.sqrt((0.05**2 + 0.05**2 + 0.15**2 + 0.15**2) / 3)
    assert c.ci == pytest.approx(3.182446 * s / 2, rel=1e-6)  # t_{0.975, 3} s / sqrt(4)
    assert c.p == pytest.approx(2 / 2**4)  # exact: all 4 signs positive, two-sided
    assert c.n == 4 and not c.significant and c.a_worse and not c.a_better
    assert c.detectable == pytest.approx((3.182446 + 0.978472) * s / 2, rel=1e-6)  # + t_{0.8, 3}
    assert paired_comparison(a, b, higher_is_better=True).a_better


def test_p_value_matches_scipy_on_a_known_case():
    d = np.array([1.0, -2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    b = np.random.default_rng(0).random(8)
    c = paired_comparison(b + d, b, higher_is_better=False)
    # W- = 2 (the rank of -2): P(W <= 2) = 3 / 2^8 ({}, {1}, {2}), two-sided 6 / 256
    assert c.p == pytest.approx(6 / 256)
    assert c.p == pytest.approx(stats.wilcoxon(d).pvalue)
    assert c.significant


def test_identical_scores_are_a_tie_with_p_one():
    c = paired_comparison(BASE, BASE.copy(), higher_is_better=False)
    assert (c.difference, c.ci, c.p, c.n) == (0.0, 0.0, 1.0, 10)
    assert not (c.significant or c.a_better or c.a_worse)


def test_paired_comparison_rejects_unpaired_arrays():
    with pytest.raises(ValueError, match="equal-length"):
        paired_comparison(BASE, BASE[:-1], higher_is_better=False)


def test_learners_not_significantly_worse_than_the_best_are_marked():
    scores = {"adjoint": BASE, "maml": TIE, "reptile": WORSE, "bias": WORSE + 0.1, "scratch": TIE}
    found = compare_learners(scores, higher_is_better=False)
    assert found.best == "adjoint"
    marked = {name for name, c in found.learners.items() if c.not_worse}
    assert marked == {"adjoint", "maml", "scratch"}
    reptile = found.learners["reptile"]
    assert reptile.vs_best.p == pytest.approx(2 / 2**10)
    assert reptile.mean == pytest.approx(WORSE.mean())
    assert reptile.vs_best.difference == pytest.approx((WORSE - BASE).mean())
    assert list(reptile.vs_baselines) == ["bias", "scratch"]  # pretrain absent
    assert reptile.vs_baselines["bias"].difference == pytest.approx(-0.1)
    assert found.learners["scratch"].vs_baselines["scratch"].p == 1.0  # itself


def test_higher_is_better_picks_the_highest_mean():
    accuracy = {"maml": 1 - BASE, "reptile": 1 - WORSE}
    found = compare_learners(accuracy, higher_is_better=True)
    assert found.best == "maml"
    assert not found.learners["reptile"].not_worse
    assert compare_learners(accuracy, higher_is_better=False).best == "reptile"


def test_claimed_pairs_follow_the_published_values():
    table_1 = {"adjoint": 0.074, "imaml": 0.114, "maml": 0.120, "fomaml": 0.292, "reptile": 0.270}
    pairs = claimed_pairs(table_1, higher_is_better=False)
    assert pairs[:4] == [("adjoint", "imaml"), ("adjoint", "maml"), ("adjoint", "reptile"),
                         ("adjoint", "fomaml")]  # fmt: skip
    assert len(pairs) == 10 and ("reptile", "fomaml") in pairs
    ranking = {"adjoint": 0, "imaml": 1, "maml": 2, "fomaml": 3, "reptile": 3}  # equal: no claim
    pairs = claimed_pairs(ranking, higher_is_better=False)
    assert len(pairs) == 9 and ("fomaml", "reptile") not in pairs
    assert ("reptile", "fomaml") not in pairs
    assert claimed_pairs({"maml": 98.7, "reptile": 97.68}, higher_is_better=True) == [
        ("maml", "reptile")
    ]


def test_claims_agree_reverse_or_tie():
    scores = {"adjoint": BASE, "imaml": WORSE, "maml": TIE}
    published = {"adjoint": 0.07, "maml": 0.10, "imaml": 0.12, "reptile": 0.30}  # no reptile here
    claims = check_claims(scores, published, higher_is_better=False)
    verdicts = {(c.better, c.worse): c.verdict for c in claims}
    assert verdicts == {
        ("adjoint", "maml"): "tie",  # p > 0.05
        ("adjoint", "imaml"): "agrees",  # adjoint lower on every task
        ("maml", "imaml"): "agrees",
    }
    reversed_claim = check_claims(scores, {"imaml": 0.05, "adjoint": 0.07}, False)
    assert [c.verdict for c in reversed_claim] == ["reversed"]
    assert reversed_claim[0].comparison.difference == pytest.approx((WORSE - BASE).mean())
    assert verdict_counts(claims) == {"agrees": 2, "tie": 1, "reversed": 0}


def test_the_detectable_difference_is_found_with_the_stated_power():
    """Normal differences of spread sigma over 100 tasks: at the detectable difference the
    paired t-test at 5 % rejects in 80 % of 4,000 simulated studies, and the signed-rank test
    the report uses in nearly as many; at half of it, in far fewer."""
    rng = np.random.default_rng(0)
    sigma, n = 0.02, 100
    z = rng.normal(size=n)
    delta = detectable_difference(sigma * (z - z.mean()) / z.std(ddof=1))  # s_d exactly sigma
    assert delta == pytest.approx((stats.t.ppf(0.975, 99) + stats.t.ppf(0.8, 99)) * sigma / 10)

    def rejected(mean: float) -> float:
        d = rng.normal(mean, sigma, (4000, n))
        t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
        return float(np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1)))

    assert rejected(delta) == pytest.approx(0.8, abs=0.025)
    assert rejected(delta / 2) < 0.4
    signed_rank = [stats.wilcoxon(rng.normal(delta, sigma, n)).pvalue < 0.05 for _ in range(400)]
    assert 0.7 < np.mean(signed_rank) < 0.86
    assert math.isnan(detectable_difference([0.1]))
