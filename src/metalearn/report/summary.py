"""The report stage's files: ``results/summary.md`` assembled from the tables and notes
(:func:`markdown`), ``summary.json``, the DVC metrics file and the plots, committed
together (:func:`write_report`) once every input has been checked against its digest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metalearn import paths
from metalearn.config import Config
from metalearn.io import Outputs
from metalearn.report.claims import Judged, best_against_published, judge, sanity_checks
from metalearn.report.families import FAMILIES
from metalearn.report.plots import _log_plots, bar_chart, curves_chart
from metalearn.report.protocol import changes_from_default, protocol_differences, protocol_table
from metalearn.report.provenance import default_config, provenance, provenance_line
from metalearn.report.registry import register_best
from metalearn.report.results import (
    ALL_USERS,
    Results,
    all_users,
    best_learner,
    collect,
    headline_metrics,
    read_scores,
    summary_metrics,
    verify_inputs,
)
from metalearn.report.tables import (
    _tasks,
    all_users_section,
    baselines_section,
    best_table,
    claims_section,
    family_table,
    other_table,
    paired_section,
)


def markdown(
    cfg: Config,
    results: Results,
    checks: dict[str, Any],
    prov: dict[str, Any],
    default: Config | None = None,
    best: dict[str, dict[str, Any]] | None = None,
    protocol: Judged | None = None,
    everyone: Judged | None = None,
) -> str:
    """The whole ``summary.md``; without ``protocol`` (no per-task scores read) no paired
    section and the best mean alone in bold; with ``everyone`` (the scores on every eligible
    meta-test user) a section of their paired comparisons and their claims beside the
    protocol's."""
    confidence = cfg.eval.confidence
    comparisons = protocol.comparisons if protocol else None
    claims = protocol.claims if protocol else None
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
    if protocol and protocol.comparisons:
        parts.append(baselines_section(protocol, everyone))
    if claims:
        parts.append(claims_section(cfg, claims, everyone.claims if everyone else None))
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
    if everyone and everyone.comparisons:
        parts.append(all_users_section(everyone))
    return "\n".join(parts)


def write_report(cfg: Config, root: Path = Path(), log_plots: bool = True) -> dict[str, Any]:
    """Write ``results/summary.{json,md}`` and ``results/plots/*.png``; return the summary."""
    results = collect(cfg, root)
    verify_inputs(cfg, results, root)
    checks = sanity_checks(results)
    prov = provenance(cfg, results, root)
    best = best_against_published(results, cfg)
    protocol = judge(cfg, results, read_scores(results, root))
    everyone = all_users(results)
    everyone = judge(cfg, everyone, read_scores(everyone, root, paths.eval_per_task_all_users))
    summary = {**summary_metrics(results), "checks": checks, "best": best, "provenance": prov}
    summary["best_learner"] = {b: best_learner(by_learner) for b, by_learner in results.items()}
    judged = protocol.json()
    for b, parts in judged.items():
        summary[b]["paired"] = parts["paired"]
    summary["claims"] = {b: parts["claims"] for b, parts in judged.items() if "claims" in parts}
    for b, parts in everyone.json().items():
        by_learner = everyone.results[b]
        tasks = next(iter(by_learner.values()))["tasks"]
        summary[b][ALL_USERS] = {"tasks": tasks, **summary_metrics({b: by_learner})[b], **parts}
    with Outputs() as out:
        plots = out.folder(root / paths.PLOTS)
        for benchmark, by_learner in results.items():
            bar_chart(benchmark, by_learner, plots / paths.scores_plot(benchmark).name)
            curves_chart(cfg, benchmark, plots / paths.curves_plot(benchmark).name, root)
        default = default_config(root)
        text = markdown(cfg, results, checks, prov, default, best, protocol, everyone)
        out.file(root / paths.SUMMARY_MD).write_text(text)
        out.write_json(root / paths.SUMMARY_JSON, summary)
        out.write_json(root / paths.METRICS_JSON, headline_metrics(results))
        out.commit()
    if log_plots:
        _log_plots(results, root / paths.PLOTS)
        register_best(results)
    return summary
