"""The report stage: every evaluation in one metrics file, paper-style tables and plots.

``results/summary.md`` holds one table per family (learners as rows) in the layout of the paper
it reproduces, the published numbers for the same cells under it, the papers' claims (which
learner beats which) checked against ours, the protocol that ran, every difference from the
papers' protocols, the sanity checks and, per benchmark, paired comparisons on the per-task
scores (:mod:`metalearn.paired`); ``results/summary.json`` the same numbers for ``dvc exp show``;
``results/plots/`` a bar chart and the meta-validation curves per benchmark (also logged to that
benchmark's MLflow runs).

The package, one job per module: :mod:`~metalearn.report.results` (the evaluations read),
:mod:`~metalearn.report.families` (the papers' tables), :mod:`~metalearn.report.claims` (sanity
checks, paired comparisons, the papers' claims), :mod:`~metalearn.report.tables` (Markdown
tables), :mod:`~metalearn.report.protocol` (the protocol as run),
:mod:`~metalearn.report.provenance` (date, commit, hardware, compute),
:mod:`~metalearn.report.plots` (the figures; matplotlib only there),
:mod:`~metalearn.report.summary` (the stage's files) and :mod:`~metalearn.report.readme`
(README's Results block holds its headline: ``python -m metalearn.report readme``) and
:mod:`~metalearn.report.recheck` (the committed report recomputed from the committed per-task
scores: ``python -m metalearn.report check``).
"""

from metalearn.report.claims import (
    best_against_published,
    compare_all,
    paper_claims,
    sanity_checks,
)
from metalearn.report.families import FAMILIES
from metalearn.report.protocol import changes_from_default, protocol_differences, protocol_table
from metalearn.report.readme import readme_with_results
from metalearn.report.results import collect, headline_metrics, read_scores, summary_metrics
from metalearn.report.summary import write_report
from metalearn.report.tables import best_table, claims_section, family_table, paired_table

__all__ = [
    "FAMILIES",
    "best_against_published",
    "best_table",
    "changes_from_default",
    "claims_section",
    "collect",
    "compare_all",
    "family_table",
    "headline_metrics",
    "paired_table",
    "paper_claims",
    "protocol_differences",
    "protocol_table",
    "read_scores",
    "readme_with_results",
    "sanity_checks",
    "summary_metrics",
    "write_report",
]
