"""The report stage: collect every evaluation into one metrics file, a table and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from metalearn import paths  # noqa: E402
from metalearn.config import Config  # noqa: E402
from metalearn.io import atomic_dir, atomic_file, read_json, write_json  # noqa: E402


def collect(cfg: Config, root: Path = Path()) -> dict[str, dict[str, dict[str, Any]]]:
    """``{benchmark: {learner: eval metrics}}`` for the pipeline's learners and benchmarks."""
    return {
        benchmark: {
            learner: read_json(root / paths.eval_metrics(learner, benchmark))
            for learner in cfg.pipeline.learners
        }
        for benchmark in cfg.pipeline.benchmarks
    }


def summary_metrics(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The compact metrics file for ``dvc exp show``: ``{benchmark: {learner: {mean, ci}}}``."""
    return {
        benchmark: {
            learner: {r["metric"]: r["mean"], "ci": r["ci"]} for learner, r in by_learner.items()
        }
        for benchmark, by_learner in results.items()
    }


def markdown_table(results: dict[str, dict[str, dict[str, Any]]], confidence: float) -> str:
    """Learners as rows, benchmarks as columns, ``mean ± half-width``; the best cell in bold."""
    benchmarks = list(results)
    learners = list(next(iter(results.values())))
    best = {}
    for b in benchmarks:
        rows = results[b]
        pick = max if rows[learners[0]]["higher_is_better"] else min
        best[b] = pick(learners, key=lambda name, rows=rows: rows[name]["mean"])
    metric_names = sorted({results[b][learners[0]]["metric"] for b in benchmarks})
    lines = [
        f"Meta-test {' / '.join(metric_names)} over the fixed meta-test tasks: mean ± "
        f"{confidence:.0%} confidence half-width (Student t).",
        "",
        "| learner | " + " | ".join(benchmarks) + " |",
        "|---|" + "---|" * len(benchmarks),
    ]
    for learner in learners:
        cells = []
        for b in benchmarks:
            r = results[b][learner]
            cell = f"{r['mean']:.3f} ± {r['ci']:.3f}"
            cells.append(f"**{cell}**" if best[b] == learner else cell)
        lines.append(f"| {learner} | " + " | ".join(cells) + " |")
    tasks = {results[b][learners[0]]["tasks"] for b in benchmarks}
    lines += ["", f"Tasks per cell: {', '.join(map(str, sorted(tasks)))}."]
    return "\n".join(lines) + "\n"


def bar_chart(benchmark: str, by_learner: dict[str, dict[str, Any]], path: Path) -> None:
    learners = list(by_learner)
    means = [by_learner[name]["mean"] for name in learners]
    cis = [by_learner[name]["ci"] for name in learners]
    metric = by_learner[learners[0]]["metric"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(learners, means, yerr=cis, capsize=4, color="#4c72b0")
    ax.set_ylabel(f"meta-test {metric}")
    ax.set_title(benchmark)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_chart(cfg: Config, benchmark: str, path: Path, root: Path = Path()) -> None:
    """Meta-validation metric against iteration, one line per learner."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for learner in cfg.pipeline.learners:
        curve = pl.read_csv(root / paths.train_curve(learner, benchmark))
        column = next(c for c in curve.columns if c.startswith("meta_val_"))
        points = curve.drop_nulls(column)
        ax.plot(points["iteration"], points[column], marker=".", label=learner)
    ax.set_xlabel("meta-training iteration")
    ax.set_ylabel(column.replace("_", " "))
    ax.set_title(benchmark)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(cfg: Config, root: Path = Path()) -> dict[str, Any]:
    """Write ``results/summary.{json,md}`` and ``results/plots/*.png``; return the summary."""
    results = collect(cfg, root)
    summary = summary_metrics(results)
    with atomic_dir(root / paths.PLOTS) as plots:
        for benchmark, by_learner in results.items():
            bar_chart(benchmark, by_learner, plots / f"{benchmark}-test.png")
            curves_chart(cfg, benchmark, plots / f"{benchmark}-curves.png", root)
    with atomic_file(root / paths.SUMMARY_MD) as tmp:
        tmp.write_text("# Results\n\n" + markdown_table(results, cfg.eval.confidence))
    write_json(root / paths.SUMMARY_JSON, summary)
    return summary
