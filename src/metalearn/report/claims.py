"""What the numbers say: issue 5's sanity checks, the paired comparisons per benchmark
(:mod:`metalearn.paired`), the papers' claims judged on them, our best learner against the
published numbers, and the ``summary.json`` form of the comparisons and claims.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from metalearn.algorithms import META_LEARNERS
from metalearn.config import Config
from metalearn.paired import (
    ALPHA,
    BenchmarkComparison,
    Claim,
    Comparison,
    check_claims,
    compare_learners,
    verdict_counts,
)
from metalearn.report.families import FAMILIES, PAPER_ROWS, Family
from metalearn.report.protocol import budget_words
from metalearn.report.results import (
    BASELINE,
    Results,
    Scores,
    _better,
    _higher,
    _pick,
    best_learner,
)

Comparisons = dict[str, BenchmarkComparison]  # benchmark -> paired comparisons
Claims = dict[str, list[Claim]]  # benchmark -> the papers' claims, judged


OMNIGLOT_TARGET = ("omniglot-way5shot1", "maml", 0.95)  # issue 5: MAML >= 95 % on 5-way 1-shot


def compare_all(results: Results, scores: Scores, confidence: float) -> Comparisons:
    """:func:`metalearn.paired.compare_learners` on each benchmark with per-task scores."""
    return {
        b: compare_learners(by_learner, _higher(results[b]), confidence)
        for b, by_learner in scores.items()
    }


def claimed_values(family: Family, cfg: Config, benchmark: str) -> dict[str, float]:
    """Per meta-learner, what the paper claims on ``benchmark``: its published number (the
    family's tables), else its place in the family's ranking (0 = best); empty where the
    family's claims are not checked."""
    if not family.ranking:
        return {}
    numbers = {
        PAPER_ROWS[name]: row[benchmark][0]
        for table in family.published(cfg)
        for name, row in table.rows.items()
        if benchmark in row
    }
    return numbers or {n: place for place, names in enumerate(family.ranking) for n in names}


def paper_claims(cfg: Config, results: Results, scores: Scores) -> Claims:
    """Per benchmark with per-task scores: every claim "X beats Y" of :func:`claimed_values`
    between our meta-learners, judged by :func:`metalearn.paired.check_claims`."""
    claims = {}
    for family in FAMILIES:
        for b in family.columns:
            values = claimed_values(family, cfg, b)
            if b in scores and values:
                higher = _higher(results[b])
                claims[b] = check_claims(scores[b], values, higher, cfg.eval.confidence)
    return claims


@dataclass(frozen=True)
class Judged:
    """One task set's evaluations (the protocol's tasks, or every eligible meta-test user), the
    paired comparisons on them and the papers' claims judged by those."""

    results: Results
    comparisons: Comparisons
    claims: Claims

    def json(self) -> dict[str, dict[str, Any]]:
        """``{benchmark: {"paired": ..., "claims": ...}}`` (claims where the paper makes any),
        as ``summary.json`` holds them."""
        out = {b: {"paired": paired_json(c)} for b, c in self.comparisons.items()}
        for b, found in self.claims.items():
            out[b]["claims"] = claims_json(found)
        return json.loads(json.dumps(out))  # lists, not tuples


def judge(cfg: Config, results: Results, scores: Scores) -> Judged:
    """:func:`compare_all` and :func:`paper_claims` on one task set."""
    comparisons = compare_all(results, scores, cfg.eval.confidence)
    return Judged(results, comparisons, paper_claims(cfg, results, scores))


def _comparison_json(c: Comparison) -> dict[str, Any]:
    return {"difference": c.difference, "ci": c.ci, "p": c.p, "n": c.n, "detectable": c.detectable}


def paired_json(comparison: BenchmarkComparison) -> dict[str, Any]:
    """A benchmark's paired comparisons for ``summary.json``."""
    learners = {
        name: {
            "mean": c.mean,
            "not_worse_than_best": c.not_worse,
            "vs_best": _comparison_json(c.vs_best),
            **{f"vs_{b}": _comparison_json(v) for b, v in c.vs_baselines.items()},
        }
        for name, c in comparison.learners.items()
    }
    return {"best": comparison.best, "alpha": ALPHA, "learners": learners}


def claims_json(claims: list[Claim]) -> dict[str, Any]:
    """A benchmark's judged claims for ``summary.json``: the counts and each claim."""
    pairs = {
        f"{c.better} better than {c.worse}": {
            **_comparison_json(c.comparison),
            "verdict": c.verdict,
        }
        for c in claims
    }
    return {**verdict_counts(claims), "claims": pairs}


def sanity_checks(results: Results) -> dict[str, Any]:
    """Issue 5's sanity rules: each meta-learner beats ``scratch`` on each benchmark (the cells
    that do not are listed), and MAML reaches 95 % on Omniglot 5-way 1-shot."""
    not_beating = [
        f"{learner}-{benchmark}"
        for benchmark, by_learner in results.items()
        if BASELINE in by_learner
        for learner in META_LEARNERS
        if learner in by_learner and not _better(by_learner[learner], by_learner[BASELINE])
    ]
    checks: dict[str, Any] = {"not_beating_scratch": not_beating}
    benchmark, learner, target = OMNIGLOT_TARGET
    if learner in results.get(benchmark, {}):
        accuracy = results[benchmark][learner]["mean"]
        checks["omniglot_maml"] = {"accuracy": accuracy, "target": target, "ok": accuracy >= target}
    return checks


def best_against_published(results: Results, cfg: Config) -> dict[str, dict[str, Any]]:
    """Per benchmark, in the families' order: our best learner and the meta-training it got
    (:func:`budget_words`), and where a paper has numbers, the published number of the same
    learner (its best row) and the best published number, with the gaps (ours minus published,
    in the table's unit: % points for accuracy, nRMSE otherwise; positive is worse for nRMSE,
    better for accuracy). A benchmark without published numbers has None for those."""
    out: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        scale = 100 if family.percent else 1
        tables = family.published(cfg)
        for b in family.columns:
            if b not in results:
                continue
            cells = {n: row[b][0] for t in tables for n, row in t.rows.items() if b in row}
            by_learner = results[b]
            pick = _pick(by_learner)
            learner = best_learner(by_learner)
            ours = scale * by_learner[learner]["mean"]
            architecture = by_learner[learner].get("architecture", "mlp")
            row = {
                "learner": learner,
                "ours": ours,
                "ci": scale * by_learner[learner]["ci"],
                "budget": budget_words(cfg, b, learner, architecture),
                "same_learner_published": None,
                "gap_to_same_learner": None,
                "best_published": None,
                "best_published_row": None,
                "gap_to_best": None,
            }
            if cells:
                paper_row = pick(cells, key=cells.__getitem__)
                same = [v for n, v in cells.items() if PAPER_ROWS[n] == learner]
                same_best = pick(same) if same else None
                row |= {
                    "same_learner_published": same_best,
                    "gap_to_same_learner": None if same_best is None else ours - same_best,
                    "best_published": cells[paper_row],
                    "best_published_row": paper_row,
                    "gap_to_best": ours - cells[paper_row],
                }
            out[b] = row
    return out
