"""The report stage: every evaluation in one metrics file, paper-style tables and plots.

``results/summary.md`` holds one table per family (learners as rows) in the layout of the paper
it reproduces, the published numbers for the same cells under it, the papers' claims (which
learner beats which) checked against ours, the protocol that ran, every difference from the
papers' protocols, the sanity checks and, per benchmark, paired comparisons on the per-task
scores (:mod:`metalearn.paired`); ``results/summary.json`` the same numbers for ``dvc exp show``;
``results/plots/`` a bar chart and the meta-validation curves per benchmark (also logged to that
benchmark's MLflow runs).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from metalearn import paths, published  # noqa: E402
from metalearn.config import (  # noqa: E402
    Config,
    benchmark_config,
    eval_steps,
    flatten,
    iterations,
    learner_options,
    learners_of,
    parse_benchmark,
)
from metalearn.io import atomic_dir, atomic_file, read_json, write_json  # noqa: E402
from metalearn.paired import (  # noqa: E402
    ALPHA,
    BenchmarkComparison,
    Claim,
    Comparison,
    check_claims,
    compare_learners,
    verdict_counts,
)

Results = dict[str, dict[str, dict[str, Any]]]  # benchmark -> learner -> eval metrics
Scores = dict[str, dict[str, np.ndarray]]  # benchmark -> learner -> per-task scores
Comparisons = dict[str, BenchmarkComparison]  # benchmark -> paired comparisons
Claims = dict[str, list[Claim]]  # benchmark -> the papers' claims, judged

META_LEARNERS = ("maml", "fomaml", "reptile", "imaml", "adjoint")
BASELINE = "scratch"  # every meta-learner must beat it
PARAMS_NAME = "params.yaml"
OMNIGLOT_TARGET = ("omniglot-way5shot1", "maml", 0.95)  # issue 5: MAML >= 95 % on 5-way 1-shot

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
    return all(
        learner_options(cfg, name)["steps"] == steps.get(name, steps["*"]) for name in META_LEARNERS
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


def collect(cfg: Config, root: Path = Path()) -> Results:
    """``{benchmark: {learner: eval metrics}}`` for the pipeline's benchmarks and the learners of
    each (:func:`metalearn.config.learners_of`: the bias baseline on collaborative filtering)."""
    results = {}
    for benchmark in cfg.pipeline.benchmarks:
        path = root / paths.eval_metrics(benchmark)
        found = read_json(path)
        learners = learners_of(cfg, benchmark)
        missing = [lr for lr in learners if lr not in found]
        if missing:
            raise FileNotFoundError(
                f"{path} has no evaluation of {', '.join(missing)}; run evaluate@{benchmark}"
            )
        results[benchmark] = {lr: found[lr] for lr in learners}
    return results


def headline_metrics(results: Results) -> dict[str, dict[str, float]]:
    """The DVC metrics file (``dvc exp show``): ``{benchmark: {learner: meta-test mean}}``,
    numbers only; intervals, paired tests and bookkeeping stay in ``summary.json``."""
    return {b: {lr: r["mean"] for lr, r in by.items()} for b, by in results.items()}


def summary_metrics(results: Results) -> dict[str, Any]:
    """``{benchmark: {learner: {<metric>: mean, ci}}}``, the head of ``summary.json``."""
    return {
        benchmark: {
            learner: {r["metric"]: r["mean"], "ci": r["ci"]} for learner, r in by_learner.items()
        }
        for benchmark, by_learner in results.items()
    }


# ---------------------------------------------------------------------------- per-task scores


def read_scores(results: Results, root: Path = Path()) -> Scores:
    """``{benchmark: {learner: per-task scores, in task order}}`` from evaluate's parquet files,
    for each benchmark that has every learner's file (the others get no paired statistics)."""
    scores = {}
    for benchmark, by_learner in results.items():
        files = {lr: root / paths.eval_per_task(lr, benchmark) for lr in by_learner}
        if not all(f.is_file() for f in files.values()):
            continue
        frames = {lr: pl.read_parquet(f).sort("task") for lr, f in files.items()}
        first = next(iter(frames))
        for lr, frame in frames.items():
            if not frame["task"].equals(frames[first]["task"]):
                raise ValueError(
                    f"{files[lr]} and {files[first]} score different tasks; run "
                    f"evaluate@{benchmark} again"
                )
        scores[benchmark] = {
            lr: frame[by_learner[lr]["metric"]].to_numpy().astype(np.float64)
            for lr, frame in frames.items()
        }
    return scores


def compare_all(results: Results, scores: Scores, confidence: float) -> Comparisons:
    """:func:`metalearn.paired.compare_learners` on each benchmark with per-task scores."""
    return {
        b: compare_learners(by_learner, _higher(results[b]), confidence)
        for b, by_learner in scores.items()
    }


def _higher(by_learner: dict[str, dict[str, Any]]) -> bool:
    return next(iter(by_learner.values()))["higher_is_better"]


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


def _comparison_json(c: Comparison) -> dict[str, Any]:
    return {"difference": c.difference, "ci": c.ci, "p": c.p, "n": c.n}


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


# ------------------------------------------------------------------------------------- checks


def _better(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["mean"] > b["mean"] if a["higher_is_better"] else a["mean"] < b["mean"]


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


# -------------------------------------------------------------------------------------- tables


def _tasks(results: Results, benchmark: str) -> int:
    return max(r["tasks"] for r in results[benchmark].values())


def _number(value: float, percent: bool, sign: str = "") -> str:
    """The tables' number format: accuracy in % with one decimal, nRMSE with three."""
    scale, digits = (100, 1) if percent else (1, 3)
    return f"{scale * value:{sign}.{digits}f}"


def _cell(r: dict[str, Any], percent: bool) -> str:
    """``mean ± per-task CI``, and ``(s sd)`` with the spread of the training seeds' means when
    there are several seeds."""
    cell = f"{_number(r['mean'], percent)} ± {_number(r['ci'], percent)}"
    if r.get("seeds", 1) > 1:
        cell += f" (s {_number(r['seed_sd'], percent)})"
    return cell


def _p_value(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _difference(c: Comparison, percent: bool) -> str:
    """``+0.012 ± 0.004 (p=0.003)``: mean paired difference ± half-width, Wilcoxon p."""
    return f"{_number(c.difference, percent, '+')} ± {_number(c.ci, percent)} ({_p_value(c.p)})"


def _published_cell(value: tuple[float, float] | None, percent: bool) -> str:
    if value is None:
        return "–"
    mean, ci = value
    return f"{mean:g} ± {ci:g}" if percent else f"{mean:.3f} ± {ci:.3f}"


def _pick(by_learner: dict[str, dict[str, Any]]) -> Callable:
    """``max`` where the metric is higher-is-better, else ``min``."""
    return max if _higher(by_learner) else min


def _best_learner(by_learner: dict[str, dict[str, Any]]) -> str:
    return _pick(by_learner)(by_learner, key=lambda name: by_learner[name]["mean"])


def _bold(benchmark: str, results: Results, comparisons: Comparisons) -> set[str]:
    """The learners in bold in a benchmark's column: every one not significantly worse than the
    best (paired tests), or the best mean alone where there are no per-task scores."""
    if benchmark in comparisons:
        return {n for n, c in comparisons[benchmark].learners.items() if c.not_worse}
    return {_best_learner(results[benchmark])}


def _bold_caption(benchmarks: Sequence[str], comparisons: Comparisons) -> str:
    """What bold means in a table of ``benchmarks``."""
    tested = (
        "Bold: the best mean and every learner not significantly worse than it (paired "
        f"Wilcoxon signed-rank test over the meta-test tasks, p < {ALPHA:g})."
    )
    missing = [b for b in benchmarks if b not in comparisons]
    if not missing:
        return tested
    untested = "bold is the best mean alone (no per-task scores, so no paired tests)"
    if len(missing) == len(benchmarks):
        return untested[0].upper() + untested[1:] + "."
    return f"{tested} {', '.join(missing)}: {untested}."


def _level(results: Results) -> str:
    """The confidence level of the intervals, e.g. ``95 %``."""
    levels = {r.get("confidence", 0.95) for by in results.values() for r in by.values()}
    return "/".join(f"{100 * c:g} %" for c in sorted(levels))


def family_table(
    family: Family, results: Results, cfg: Config, comparisons: Comparisons | None = None
) -> str:
    """Our numbers (in bold: the learners not significantly worse than the best, or the best
    alone without ``comparisons``; † where a meta-learner does not beat scratch), then the
    published ones for the same columns."""
    comparisons = comparisons or {}
    columns = [(b, h) for b, h in zip(family.columns, family.headers, strict=True) if b in results]
    learners = list(dict.fromkeys(lr for b, _ in columns for lr in results[b]))  # "–": not run
    most = max(_tasks(results, b) for b in results)
    columns = [  # a column scored on fewer tasks than the others says so
        (b, h if _tasks(results, b) == most else f"{h} ({_tasks(results, b)} tasks)")
        for b, h in columns
    ]
    lines = [f"### {family.title}", "", _bold_caption([b for b, _ in columns], comparisons)]
    seeds = {r.get("seeds", 1) for b, _ in columns for r in results[b].values()}
    if max(seeds) > 1:
        lines += [
            f"Cells: mean ± the {_level(results)} interval over the meta-test tasks (a task's "
            "score is its mean over the training seeds); (s …): the standard deviation of the "
            f"seeds' means ({', '.join(map(str, sorted(seeds)))} seeds)."
        ]
    lines += [""]
    lines += ["| learner | " + " | ".join(h for _, h in columns) + " |"]
    lines += ["|---|" + "---|" * len(columns)]
    bold = {b: _bold(b, results, comparisons) for b, _ in columns}
    for learner in learners:
        cells = []
        for b, _ in columns:
            if learner not in results[b]:
                cells.append("–")
                continue
            r, cell = results[b][learner], _cell(results[b][learner], family.percent)
            if learner in bold[b]:
                cell = f"**{cell}**"
            beaten = BASELINE in results[b] and not _better(r, results[b][BASELINE])
            if learner in META_LEARNERS and beaten:
                cell += " †"
            cells.append(cell)
        lines.append(f"| {learner} | " + " | ".join(cells) + " |")
    tables = family.published(cfg)
    shown = [(b, h) for b, h in columns if any(b in r for t in tables for r in t.rows.values())]
    if shown:  # one table under ours, the same columns, every paper's rows
        rows: dict[str, dict[str, tuple[float, float]]] = {}
        for table in tables:
            for name, row in table.rows.items():
                rows.setdefault(name, {}).update(row)
        sources = "; ".join(t.source for t in tables)
        lines += ["", f"Published ({sources}):", ""]
        lines += ["| paper's row | " + " | ".join(h for _, h in shown) + " |"]
        lines += ["|---|" + "---|" * len(shown)]
        for name, row in rows.items():
            cells = [_published_cell(row.get(b), family.percent) for b, _ in shown]
            lines.append(f"| {name} (ours: {PAPER_ROWS[name]}) | " + " | ".join(cells) + " |")
        lines += [f"\n{t.note}" for t in tables if t.note]
    if family.percent:
        lines += ["", published.BATCH_NORM_NOTE]
    return "\n".join(lines) + "\n"


def best_against_published(results: Results, cfg: Config) -> dict[str, dict[str, Any]]:
    """Per benchmark with published numbers: our best learner, the published number of the
    same learner (its best row) and the best published number, with the gaps (ours minus
    published, in the table's unit: % points for accuracy, nRMSE otherwise; positive is worse
    for nRMSE, better for accuracy)."""
    out: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        scale = 100 if family.percent else 1
        tables = family.published(cfg)
        for b in family.columns:
            cells = {n: row[b][0] for t in tables for n, row in t.rows.items() if b in row}
            if b not in results or not cells:
                continue
            by_learner = results[b]
            pick = _pick(by_learner)
            learner = _best_learner(by_learner)
            ours = scale * by_learner[learner]["mean"]
            paper_row = pick(cells, key=cells.__getitem__)
            same = [v for n, v in cells.items() if PAPER_ROWS[n] == learner]
            same_best = pick(same) if same else None
            out[b] = {
                "learner": learner,
                "ours": ours,
                "ci": scale * by_learner[learner]["ci"],
                "same_learner_published": same_best,
                "gap_to_same_learner": None if same_best is None else ours - same_best,
                "best_published": cells[paper_row],
                "best_published_row": paper_row,
                "gap_to_best": ours - cells[paper_row],
            }
    return out


def best_table(best: dict[str, dict[str, Any]]) -> str:
    """:func:`best_against_published` as a table."""

    def num(v: float | None, sign: str = "") -> str:
        return "–" if v is None else f"{v:{sign}.1f}" if abs(v) >= 1 else f"{v:{sign}.3f}"

    def gap(v: float | None) -> str:
        return num(v, "+")

    lines = [
        "### Best learner per benchmark against the papers",
        "",
        "Gaps are ours minus published, in the table's unit (accuracy in % points: negative is "
        "worse; nRMSE: positive is worse).",
        "",
        "| benchmark | best here | ours | same learner, published | gap | best published "
        "(row) | gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for b, r in best.items():
        lines.append(
            f"| {b} | {r['learner']} | {num(r['ours'])} ± {num(r['ci'])} | "
            f"{num(r['same_learner_published'])} | {gap(r['gap_to_same_learner'])} | "
            f"{num(r['best_published'])} ({r['best_published_row']}) | {gap(r['gap_to_best'])} |"
        )
    return "\n".join(lines) + "\n"


def other_table(
    benchmarks: Sequence[str], results: Results, cfg: Config, comparisons: Comparisons | None = None
) -> str:
    """Benchmarks outside the paper families, in one plain table."""
    family = Family("Other benchmarks", tuple(benchmarks), tuple(benchmarks), False, lambda c: [])
    return family_table(family, results, cfg, comparisons)


def _percent(benchmark: str) -> bool:
    """Whether the benchmark's family shows its metric in %."""
    return any(benchmark in f.columns and f.percent for f in FAMILIES)


def paired_table(benchmark: str, results: Results, comparison: BenchmarkComparison) -> str:
    """Each learner's mean ± CI (bold as in the family tables) and its paired difference to the
    best learner and to each other baseline (:func:`_difference`; "–" against itself)."""
    percent, best = _percent(benchmark), comparison.best
    baselines = [b for b in next(iter(comparison.learners.values())).vs_baselines if b != best]
    heads = ["learner", "mean", f"− {best} (best)", *(f"− {b}" for b in baselines)]
    lines = [f"#### {benchmark}", "", "| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
    for name, c in comparison.learners.items():
        against = {best: c.vs_best, **{b: c.vs_baselines[b] for b in baselines}}
        cells = ["–" if name == o else _difference(v, percent) for o, v in against.items()]
        mean = _cell(results[benchmark][name], percent)
        mean = f"**{mean}**" if c.not_worse else mean
        lines.append(f"| {name} | {mean} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_section(results: Results, comparisons: Comparisons, confidence: float) -> str:
    """:func:`paired_table` per benchmark, and the benchmarks without per-task scores."""
    lines = [
        "### Paired comparisons per benchmark",
        "",
        "Every learner is scored on the same meta-test tasks, so scores pair up by task. Each "
        "difference: mean over tasks of (row's learner − column's learner) ± the "
        f"{confidence:.0%} Student-t half-width, and the two-sided Wilcoxon signed-rank p; "
        "negative is better for nRMSE, positive for accuracy (in % points). Bold: not "
        f"significantly worse than the best (p < {ALPHA:g}).",
        "",
    ]
    if missing := [b for b in results if b not in comparisons]:
        where = paths.eval_per_task("<learner>", "<benchmark>")
        lines += [f"No per-task scores ({where}) for {', '.join(missing)}: no paired tests.", ""]
    lines += [paired_table(b, results, comparisons[b]) for b in results if b in comparisons]
    return "\n".join(lines)


def claims_section(cfg: Config, claims: Claims) -> str:
    """The papers' claims against ours: counts per benchmark, then per family each claim's
    verdict, difference and p per benchmark."""
    families = [f for f in FAMILIES if f.ranking and any(b in claims for b in f.columns)]
    sources = "; ".join(f"{f.title.partition(':')[0]}: {_claims_source(f, cfg)}" for f in families)
    lines = [
        "### Paper's claims",
        "",
        "The Adjoint MAML paper ranks A-MAML < iMAML < MAML < {Reptile, FOMAML} in nRMSE. Per "
        "benchmark, each pair of our meta-learners whose published numbers differ is a claim "
        f'"X better than Y" ({sources}). Ours *agrees* where X is better with paired Wilcoxon '
        f"p < {ALPHA:g}, is *reversed* where Y is, else it is a *tie*.",
        "",
        "| benchmark | claims | agrees | ties | reversed |",
        "|---|---|---|---|---|",
    ]
    every = {**claims, "all": [c for found in claims.values() for c in found]}
    for b, found in every.items():
        counts = " | ".join(str(n) for n in verdict_counts(found).values())
        lines.append(f"| {b} | {len(found)} | {counts} |")
    for family in families:
        lines += ["", _claims_table(family, claims)]
    return "\n".join(lines) + "\n"


def _claims_source(family: Family, cfg: Config) -> str:
    tables = family.published(cfg)
    return "; ".join(t.source for t in tables) if tables else "the ranking (no published numbers)"


def _claims_table(family: Family, claims: Claims) -> str:
    """One row per claim "X better than Y" of the family's benchmarks, one column per benchmark:
    the verdict, our mean difference X − Y and its p ("–": not claimed there)."""
    columns = [(b, h) for b, h in zip(family.columns, family.headers, strict=True) if b in claims]
    judged = {(b, c.better, c.worse): c for b, _ in columns for c in claims[b]}
    pairs = list(dict.fromkeys((x, y) for _, x, y in judged))
    lines = ["| claim | " + " | ".join(h for _, h in columns) + " |"]
    lines += ["|---|" + "---|" * len(columns)]
    for x, y in pairs:
        cells = [_verdict_cell(judged.get((b, x, y)), family.percent) for b, _ in columns]
        lines.append(f"| {x} better than {y} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict_cell(claim: Claim | None, percent: bool) -> str:
    """``agrees: -0.020 (p<0.001)``; "–" for no claim."""
    if claim is None:
        return "–"
    c = claim.comparison
    return f"{claim.verdict}: {_number(c.difference, percent, '+')} ({_p_value(c.p)})"


def _model_words(architecture: str, cfg: Config) -> str:
    """The model a benchmark's learners ran, in a few words."""
    if architecture == "conv4":
        return f"Conv4, {cfg.model.filters} filters"
    if architecture == "ratings" and cfg.model.cf == "factors":
        head = "head adapted" if cfg.algo.adapt == "head" else "all adapted"
        return f"item factors ({cfg.model.item_dim}) + MLP {cfg.model.hidden}, {head}"
    return f"MLP {cfg.model.hidden}"


def protocol_table(cfg: Config, results: Results) -> str:
    """What ran per benchmark: K in training and at meta-test, step size, meta-batch, iterations,
    model, and the data it saw."""
    lines = [
        "| benchmark | K train (" + "/".join(META_LEARNERS) + ") | K test "
        "| α (one, or per learner) | meta-batch | iterations | model | data |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for benchmark in results:
        bcfg = benchmark_config(cfg, benchmark)
        k = "/".join(str(learner_options(bcfg, n)["steps"]) for n in META_LEARNERS)
        k_test = "/".join(str(eval_steps(bcfg, n)) for n in META_LEARNERS)
        rates = [learner_options(bcfg, n)["inner_lr"] for n in META_LEARNERS]
        lr = "/".join(f"{r:g}" for r in rates) if len(set(rates)) > 1 else f"{rates[0]:g}"
        first = next(iter(results[benchmark].values()))
        model = _model_words(first.get("architecture", "mlp"), bcfg)
        lines.append(
            f"| {benchmark} | {k} | {k_test} | {lr} | {bcfg.train.meta_batch} "
            f"| {_iterations_words(bcfg, cfg.pipeline.learners)} | {model} "
            f"| {_data_words(first.get('counts'))} |"
        )
    return "\n".join(lines) + "\n"


def _iterations_words(cfg: Config, learners: Sequence[str]) -> str:
    """``train.iterations``, and the learners with their own count: ``200 (maml 1500)``."""
    shared = cfg.train.iterations
    own = [
        f"{n} {iterations(cfg, n)}"
        for n in learners
        if n != BASELINE and iterations(cfg, n) != shared  # scratch trains for 0 anyway
    ]
    return f"{shared} ({', '.join(own)})" if own else str(shared)


def _data_words(counts: dict[str, Any] | None) -> str:
    if not counts:
        return "generated"
    if "ratings" in counts:
        return f"{counts['ratings']:,} ratings, {sum(counts['users'].values()):,} users"
    if "base_classes" in counts:
        classes, images = sum(counts["base_classes"].values()), sum(counts["images"].values())
        return f"{classes:,} classes, {images:,} images"  # both per split in the episodes
    return ""


def protocol_differences(cfg: Config, results: Results) -> list[str]:
    """Every way the run differs from the papers' protocols (:mod:`metalearn.published`)."""
    notes = []
    for benchmark in results:
        paper = published.paper_protocol(benchmark)
        if paper is None:
            continue
        bcfg = benchmark_config(cfg, benchmark)
        maml, imaml = learner_options(bcfg, "maml"), learner_options(bcfg, "imaml")
        checks = [
            ("MAML K", maml["steps"], paper.maml_steps),
            ("MAML K at meta-test", eval_steps(bcfg, "maml"), paper.maml_eval_steps),
            ("inner step size", maml["inner_lr"], paper.inner_lr),
            ("meta-batch", bcfg.train.meta_batch, paper.meta_batch),
            ("iMAML K", imaml["steps"], paper.imaml_steps),
            ("K of the others", learner_options(bcfg, "fomaml")["steps"], paper.other_steps),
        ]
        counts = next(iter(results[benchmark].values())).get("counts")
        if paper.filters is not None:
            checks.append(("Conv4 filters", bcfg.model.filters, paper.filters))
        found = [f"{what} {ours:g} (paper {theirs:g})" for what, ours, theirs in checks if
                 theirs is not None and ours != theirs]  # fmt: skip
        dataset, _ = parse_benchmark(cfg, benchmark)
        if dataset in published.PAPER_DATA and counts:
            unit, theirs = published.PAPER_DATA[dataset]
            ours = _count(counts, unit)
            if ours is not None and ours != theirs:
                found.append(f"{ours:,} {unit} (paper {theirs:,})")
        if found:
            notes.append(f"{benchmark}: " + "; ".join(found))
    return notes


def default_config(root: Path) -> Config | None:
    """The committed ``params.yaml`` (git ``HEAD``): the default protocol an experiment's ``-S``
    changes depart from; None outside git."""
    from omegaconf import OmegaConf

    from metalearn.config import ConfigError, build_config

    text = _git("show", f"HEAD:{PARAMS_NAME}", root=root)
    if text == "unknown":
        return None
    try:
        return build_config(OmegaConf.to_container(OmegaConf.create(text)))
    except (ConfigError, ValueError):
        return None  # an older params.yaml that today's schema rejects


def _protocol_leaves(cfg: Config, benchmark: str) -> dict[str, Any]:
    """The keys a benchmark's stages read, flattened: algo, model, train, eval, the dataset's
    shared keys and its own setting."""
    bcfg = benchmark_config(cfg, benchmark)
    dataset, setting = parse_benchmark(cfg, benchmark)
    data = dataclasses.asdict(getattr(bcfg.data, dataset))
    data["settings"] = {setting: data["settings"][setting]}
    tree = {s: dataclasses.asdict(getattr(bcfg, s)) for s in ("algo", "model", "train", "eval")}
    leaves = flatten({**tree, "data": {dataset: data}})
    return {k: list(v) if isinstance(v, tuple) else v for k, v in leaves.items()}  # as in YAML


def changes_from_default(cfg: Config, default: Config, results: Results) -> list[str]:
    """Every key whose value differs from the default protocol, with the benchmarks it applies
    to (all of them: "every benchmark")."""
    changed: dict[tuple[str, str, str], list[str]] = {}
    for benchmark in results:
        if benchmark not in default.pipeline.benchmarks:
            continue
        ours, theirs = _protocol_leaves(cfg, benchmark), _protocol_leaves(default, benchmark)
        for key, value in ours.items():
            if value != theirs.get(key):
                changed.setdefault((key, repr(value), repr(theirs.get(key))), []).append(benchmark)
    lines = []
    for (key, value, was), benchmarks in changed.items():
        where = "every benchmark" if len(benchmarks) == len(results) else ", ".join(benchmarks)
        show = lambda text: text.replace("None", "null").strip("'")  # noqa: E731
        lines.append(f"`{key}` = {show(value)} (default {show(was)}): {where}")
    return lines


def _count(counts: dict[str, Any], unit: str) -> int | None:
    if unit == "characters":
        return sum(counts["base_classes"].values())
    if unit == "users":
        return sum(counts["users"].values())
    return counts.get(unit)


# ------------------------------------------------------------------------------------- plots


def bar_chart(benchmark: str, by_learner: dict[str, dict[str, Any]], path: Path) -> None:
    learners = list(by_learner)
    means = [by_learner[name]["mean"] for name in learners]
    cis = [by_learner[name]["ci"] for name in learners]
    metric = by_learner[learners[0]]["metric"]
    colors = ["#4c72b0" if name in META_LEARNERS else "#999999" for name in learners]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(learners, means, yerr=cis, capsize=4, color=colors)
    ax.set_ylabel(f"meta-test {metric}")
    ax.set_title(f"{benchmark} (grey: baselines)")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_chart(cfg: Config, benchmark: str, path: Path, root: Path = Path()) -> None:
    """Meta-validation metric against iteration, one line per learner (the mean over its
    training seeds); a learner without meta-training (scratch, bias) is a dashed level."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    column = "meta_val"
    for learner in learners_of(cfg, benchmark):
        curve = pl.read_csv(root / paths.train_curve(learner, benchmark))
        column = next(c for c in curve.columns if c.startswith("meta_val_"))
        points = curve.drop_nulls(column).group_by("iteration").agg(pl.col(column).mean())
        points = points.sort("iteration")
        if points.height == 1 and points["iteration"][0] == 0:
            ax.axhline(points[column][0], linestyle="--", color="#999999", label=learner)
        else:
            ax.plot(points["iteration"], points[column], marker=".", label=learner)
    ax.set_xlabel("meta-training iteration")
    ax.set_ylabel(column.replace("_", " "))
    ax.set_title(benchmark)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _log_plots(results: Results, plots: Path) -> None:
    """Each benchmark's plots into each of its MLflow runs; a run the tracking store no longer
    has (results restored from DVC's cache elsewhere) is skipped with a warning."""
    from metalearn import tracking

    try:
        tracking.connect()
    except tracking.TrackingError as error:  # the report stands without MLflow
        warnings.warn(f"plots not logged to MLflow: {error}", stacklevel=2)
        return
    for benchmark, by_learner in results.items():
        files = [plots / f"{benchmark}-test.png", plots / f"{benchmark}-curves.png"]
        for learner, r in by_learner.items():
            try:
                tracking.log_to_run(r["mlflow_run_id"], {}, artifacts=files)
            except Exception as error:  # noqa: BLE001 - the report stands without MLflow
                message = f"plots not logged to the run of {learner}-{benchmark}: {error}"
                warnings.warn(message, stacklevel=2)


# ------------------------------------------------------------------------------------ provenance


def provenance(cfg: Config, results: Results, root: Path) -> dict[str, Any]:
    """When, from which commit, on what hardware and with how much compute the numbers came."""
    train = [
        read_json(root / paths.train_metrics(learner, benchmark))
        for benchmark in results
        for learner in results[benchmark]
    ]
    devices = sorted({t.get("device", "?") for t in train})
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "commit": _git("rev-parse", "--short", "HEAD", root=root),
        "experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        "hardware": _hardware(devices),
        "train_seconds": round(sum(t.get("seconds", 0.0) for t in train), 1),
        "eval_seconds": round(
            sum(r.get("seconds", 0.0) for by in results.values() for r in by.values()), 1
        ),
    }


def _git(*args: str, root: Path) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _hardware(devices: list[str]) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    words = f"{cpu}, {os.cpu_count()} cores"
    if any(d.startswith("cuda") for d in devices):
        import torch

        words = f"{torch.cuda.get_device_name(0)} GPU; {words}"
    return words


def provenance_line(p: dict[str, Any]) -> str:
    return (
        f"Produced {p['date']} from commit `{p['commit']}` (experiment `{p['experiment']}`) on "
        f"{p['hardware']}; compute: {p['train_seconds'] / 60:.1f} min of meta-training and "
        f"{p['eval_seconds'] / 60:.1f} min of meta-testing, summed over the stages."
    )


# ---------------------------------------------------------------------------------------- write


def markdown(
    cfg: Config,
    results: Results,
    checks: dict[str, Any],
    prov: dict[str, Any],
    default: Config | None = None,
    best: dict[str, dict[str, Any]] | None = None,
    comparisons: Comparisons | None = None,
    claims: Claims | None = None,
) -> str:
    """The whole ``summary.md``; without ``comparisons`` (no per-task scores read) no paired
    section and the best mean alone in bold."""
    confidence = cfg.eval.confidence
    most = max(_tasks(results, b) for b in results)
    parts = [
        "# Results",
        "",
        provenance_line(prov),
        "",
        f"Each cell: mean over the benchmark's first {most} fixed meta-test tasks (fewer where a "
        f"column says so) ± the {confidence:.0%} Student-t half-width (bold: see each table); † "
        "marks a meta-learner whose mean does not beat the `scratch` baseline's there.",
        "",
    ]
    placed: set[str] = set()
    for family in FAMILIES:
        if any(b in results for b in family.columns):
            parts.append(family_table(family, results, cfg, comparisons))
            placed |= set(family.columns)
    if rest := [b for b in results if b not in placed]:
        parts.append(other_table(rest, results, cfg, comparisons))
    if best:
        parts.append(best_table(best))
    if claims:
        parts.append(claims_section(cfg, claims))
    parts += ["### Sanity checks", ""]
    bad = checks["not_beating_scratch"]
    if not bad:
        parts.append("- Every meta-learner beats `scratch` on every benchmark.")
    else:
        by_benchmark: dict[str, list[str]] = {}
        for cell in bad:
            learner, _, benchmark = cell.partition("-")
            by_benchmark.setdefault(benchmark, []).append(learner)
        where = "; ".join(f"{b}: {', '.join(names)}" for b, names in by_benchmark.items())
        parts.append(f"- Not better than `scratch` ({len(bad)} cells, marked †): {where}.")
    if om := checks.get("omniglot_maml"):
        verdict = "reached" if om["ok"] else "NOT reached"
        parts.append(
            f"- MAML on Omniglot 5-way 1-shot: {100 * om['accuracy']:.1f} % "
            f"(target {100 * om['target']:.0f} %: {verdict})."
        )
    parts += ["", "### Protocol as run", "", protocol_table(cfg, results)]
    if diffs := protocol_differences(cfg, results):
        parts += ["### Differences from the papers' protocols", ""]
        parts += [f"- {d}" for d in diffs] + [""]
    if default is not None and (changes := changes_from_default(cfg, default, results)):
        parts += [
            f"### Changes from the default protocol (`params.yaml` at `{prov['commit']}`)",
            "",
        ]
        parts += [f"- {c}" for c in changes] + [""]
    if comparisons is not None:
        parts.append(paired_section(results, comparisons, confidence))
    return "\n".join(parts)


def write_report(cfg: Config, root: Path = Path(), log_plots: bool = True) -> dict[str, Any]:
    """Write ``results/summary.{json,md}`` and ``results/plots/*.png``; return the summary."""
    results = collect(cfg, root)
    checks = sanity_checks(results)
    prov = provenance(cfg, results, root)
    best = best_against_published(results, cfg)
    scores = read_scores(results, root)
    comparisons = compare_all(results, scores, cfg.eval.confidence)
    claims = paper_claims(cfg, results, scores)
    summary = {**summary_metrics(results), "checks": checks, "best": best, "provenance": prov}
    for b, comparison in comparisons.items():
        summary[b]["paired"] = paired_json(comparison)
    summary["claims"] = {b: claims_json(found) for b, found in claims.items()}
    with atomic_dir(root / paths.PLOTS) as plots:
        for benchmark, by_learner in results.items():
            bar_chart(benchmark, by_learner, plots / f"{benchmark}-test.png")
            curves_chart(cfg, benchmark, plots / f"{benchmark}-curves.png", root)
    with atomic_file(root / paths.SUMMARY_MD) as tmp:
        text = markdown(cfg, results, checks, prov, default_config(root), best, comparisons, claims)
        tmp.write_text(text)
    write_json(root / paths.SUMMARY_JSON, summary)
    write_json(root / paths.METRICS_JSON, headline_metrics(results))
    if log_plots:
        _log_plots(results, root / paths.PLOTS)
    return summary


# ------------------------------------------------------------------------------ README "Results"

README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"


def readme_with_results(readme: str, summary_md: str) -> str:
    """``readme`` with the block between the results markers replaced by the report (its tables
    and notes, without the top heading): the README's Results section is generated."""
    if README_BEGIN not in readme or README_END not in readme:
        raise ValueError(f"README.md lacks the markers {README_BEGIN} ... {README_END}")
    body = summary_md.split("\n", 1)[1].strip() if summary_md.startswith("# ") else summary_md
    head, rest = readme.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{body}\n{README_END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m metalearn.report readme``: copy results/summary.md into README.md."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("command", choices=["readme"])
    parser.parse_args(argv)
    readme = Path("README.md")
    readme.write_text(readme_with_results(readme.read_text(), paths.SUMMARY_MD.read_text()))
    print(f"{readme}: Results section updated from {paths.SUMMARY_MD}")
    return 0


__all__ = [
    "FAMILIES",
    "collect",
    "compare_all",
    "headline_metrics",
    "paper_claims",
    "read_scores",
    "readme_with_results",
    "sanity_checks",
    "summary_metrics",
    "write_report",
]

if __name__ == "__main__":
    raise SystemExit(main())
