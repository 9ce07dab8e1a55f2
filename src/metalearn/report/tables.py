"""The Markdown tables of ``summary.md``: a family's numbers with the published ones under them,
our best learner against the papers, the paired comparisons and the papers' claims, with the
number formats and what bold means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from metalearn import paths, published
from metalearn.algorithms import META_LEARNERS
from metalearn.config import Config
from metalearn.paired import (
    ALPHA,
    POWER,
    BenchmarkComparison,
    Claim,
    Comparison,
    verdict_counts,
)
from metalearn.report.claims import Claims, Comparisons, Judged
from metalearn.report.families import FAMILIES, PAPER_ROWS, Family
from metalearn.report.results import BASELINE, Results, _better, _pick, best_learner


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


def _bold(benchmark: str, results: Results, comparisons: Comparisons) -> set[str]:
    """The learners in bold in a benchmark's column: every one not significantly worse than the
    best (paired tests), or the best mean alone where there are no per-task scores."""
    if benchmark in comparisons:
        return {n for n, c in comparisons[benchmark].learners.items() if c.not_worse}
    return {best_learner(results[benchmark])}


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
        "worse; nRMSE: positive is worse); –: no published number. Budget: the best learner's "
        "meta-training here, in iterations × tasks a meta-batch (the whole protocol: the "
        'report\'s "Protocol as run").',
        "",
        "| benchmark | best here | ours | budget | same learner, published | gap "
        "| best published (row) | gap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b, r in best.items():
        row = r["best_published_row"]
        paper = "–" if row is None else f"{num(r['best_published'])} ({row})"
        lines.append(
            f"| {b} | {r['learner']} | {num(r['ours'])} ± {num(r['ci'])} | {r['budget']} | "
            f"{num(r['same_learner_published'])} | {gap(r['gap_to_same_learner'])} | "
            f"{paper} | {gap(r['gap_to_best'])} |"
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


def paired_table(
    benchmark: str, results: Results, comparison: BenchmarkComparison, title: str = ""
) -> str:
    """Each learner's mean ± CI (bold as in the family tables) and its paired difference to the
    best learner and to each other baseline (:func:`_difference`; "–" against itself); the
    heading is ``title``, else the benchmark's name."""
    percent, best = _percent(benchmark), comparison.best
    baselines = [b for b in next(iter(comparison.learners.values())).vs_baselines if b != best]
    heads = ["learner", "mean", f"− {best} (best)", *(f"− {b}" for b in baselines)]
    heading = f"#### {title or benchmark}"
    lines = [heading, "", "| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
    detectable = []
    for name, c in comparison.learners.items():
        against = {best: c.vs_best, **{b: c.vs_baselines[b] for b in baselines}}
        cells = ["–" if name == o else _difference(v, percent) for o, v in against.items()]
        detectable += [v.detectable for o, v in against.items() if o != name]
        mean = _cell(results[benchmark][name], percent)
        mean = f"**{mean}**" if c.not_worse else mean
        lines.append(f"| {name} | {mean} | " + " | ".join(cells) + " |")
    if found := sorted(d for d in detectable if d == d):  # NaN: fewer than two tasks
        middle, low, high = (_number(found[i], percent) for i in (len(found) // 2, 0, -1))
        lines += [
            "",
            f"Detectable at {POWER:.0%} power: {middle} (median over the table's pairs; "
            f"{low} to {high}). A tie here rules out a larger difference, not a smaller one.",
        ]
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


BASELINE_ROWS = ("bias", "pretrain")  # the baselines of baselines_section


def baselines_section(protocol: Judged, everyone: Judged | None = None) -> str:
    """Per benchmark, the best meta-learner against the baselines a practitioner tries first
    (``bias`` on collaborative filtering, ``pretrain``): the paired difference ± its interval,
    the Wilcoxon p and the difference the tasks detect at :data:`POWER`, on the protocol's tasks
    and, where scored, on every eligible meta-test user (the row below)."""
    lines = [
        "### The best meta-learner against the baselines",
        "",
        "Per benchmark, the meta-learner with the best mean against `bias` and `pretrain`: mean "
        "paired difference (meta-learner − baseline; negative is better for nRMSE, positive for "
        "accuracy) ± its interval, Wilcoxon p, and the difference these tasks detect at "
        f"{POWER:.0%} power; on the protocol's tasks, then on every eligible meta-test user.",
        "",
        "| benchmark | best meta-learner | tasks | "
        + " | ".join(f"− {b}" for b in BASELINE_ROWS)
        + " |",
        "|---|---|---|" + "---|" * len(BASELINE_ROWS),
    ]
    for b in protocol.comparisons:
        rows = [_baselines_row(protocol, b, "")]
        if everyone and b in everyone.comparisons:
            rows.append(_baselines_row(everyone, b, " (all users)"))
        lines += [row for row in rows if row is not None]
    return "\n".join(lines) + "\n"


def _baselines_row(judged: Judged, benchmark: str, note: str) -> str | None:
    comparison, by_learner = judged.comparisons[benchmark], judged.results[benchmark]
    meta = [lr for lr in META_LEARNERS if lr in comparison.learners]
    if not meta:
        return None
    best = _pick(by_learner)(meta, key=lambda lr: by_learner[lr]["mean"])
    cells = []
    for baseline in BASELINE_ROWS:
        c = comparison.learners[best].vs_baselines.get(baseline)
        cells.append("–" if c is None else _precise(c, _percent(benchmark)))
    tasks = f"{_tasks(judged.results, benchmark):,}{note}"
    return f"| {benchmark} | {best} | {tasks} | " + " | ".join(cells) + " |"


def _precise(c: Comparison, percent: bool) -> str:
    """``-0.0048 ± 0.0036 (p=0.001; detects 0.0041)``: one more digit than the tables, for the
    small differences between a meta-learner and a baseline."""
    scale, digits = (100, 2) if percent else (1, 4)
    diff = f"{scale * c.difference:+.{digits}f}"
    ci, det = (f"{scale * v:.{digits}f}" for v in (c.ci, c.detectable))
    return f"{diff} ± {ci} ({_p_value(c.p)}; detects {det})"


def all_users_section(everyone: Judged) -> str:
    """:func:`paired_table` per benchmark on every eligible meta-test user."""
    lines = [
        "### Every eligible meta-test user",
        "",
        "The collaborative-filtering benchmarks are also scored on one task per eligible "
        "meta-test user (at least shots + queries ratings): the protocol's tasks first, then "
        "every other user, each with its own support and query draw. Same statistics as the "
        "paired comparisons above; more tasks, so smaller differences are detectable.",
        "",
    ]
    for b, comparison in everyone.comparisons.items():
        tasks = _tasks(everyone.results, b)
        lines.append(paired_table(b, everyone.results, comparison, f"{b}: {tasks:,} users"))
    return "\n".join(lines)


def claims_section(cfg: Config, claims: Claims, everyone: Claims | None = None) -> str:
    """The papers' claims against ours: counts per benchmark (and on every eligible meta-test
    user, ``everyone``, where scored), then per family each claim's verdict, difference and p
    per benchmark."""
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
    ]
    everyone = everyone or {}
    heads = ["benchmark", "claims", "agrees", "ties", "reversed"]
    if everyone:
        heads += ["all users: agrees", "ties", "reversed"]
    lines += ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
    every = {**claims, "all": [c for found in claims.values() for c in found]}
    every_user = {**everyone, "all": [c for found in everyone.values() for c in found]}
    for b, found in every.items():
        counts = [len(found), *verdict_counts(found).values()]
        if everyone:
            on_all = every_user.get(b)
            counts += [*verdict_counts(on_all).values()] if on_all else ["–"] * 3
        lines.append(f"| {b} | " + " | ".join(str(n) for n in counts) + " |")
    for family in families:
        lines += ["", _claims_table(family, claims)]
    if everyone:
        lines += ["", "On every eligible meta-test user:"]
        for family in families:
            if any(b in everyone for b in family.columns):
                lines += ["", _claims_table(family, everyone)]
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
