"""Where a pipeline run's wall time went, from the start and end times of its MLflow runs.

    python benchmarks/stage_timeline.py mlflow.db --experiment cpu
    python benchmarks/stage_timeline.py mlflow.db --experiment cpu --runs   # one row per run

Every train stage is one MLflow run, so the runs of one DVC experiment (tag ``dvc_experiment``)
in start order time the training itself (start to its last metric) and, between that and the
next run's start, everything else: DVC's bookkeeping, a fresh interpreter importing torch and
MLflow, the stage's set-up and exit, and any stage in between that opens no run of its own. The
last metric, not the run's end time: the evaluate stages of metalearn before 2026-12-01 reopened
the runs to add test metrics, which moved their end times. Reads the SQLite store with the
standard library only (no MLflow import, no server).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
from pathlib import Path
from typing import Any


def timeline(db: Path, experiment: str) -> list[dict[str, Any]]:
    """The finished runs tagged ``dvc_experiment=experiment``, in start order, with their
    ``seconds`` (end - start) and ``gap`` (seconds since the previous run's end; None first)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute(
            "SELECT r.name, r.start_time, r.end_time, (SELECT max(m.timestamp) FROM metrics m"
            "  WHERE m.run_uuid = r.run_uuid AND m.key NOT LIKE 'test\\_%' ESCAPE '\\')"
            " FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'dvc_experiment'"
            " WHERE t.value = ? AND r.status = 'FINISHED' ORDER BY r.start_time",
            (experiment,),
        ).fetchall()
    runs, previous_end = [], None
    for name, start, end, last_metric in rows:
        end = min(end, last_metric) if last_metric is not None else end
        gap = None if previous_end is None else (start - previous_end) / 1000
        runs.append({"name": name, "seconds": (end - start) / 1000, "gap": gap})
        previous_end = end
    return runs


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    gaps = [r["gap"] for r in runs if r["gap"] is not None]
    return {
        "runs": len(runs),
        "run_seconds": sum(r["seconds"] for r in runs),
        "gap_seconds": sum(gaps),
        "mean_gap": statistics.mean(gaps) if gaps else 0.0,
        "median_gap": statistics.median(gaps) if gaps else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("db", type=Path, help="the SQLite MLflow store (mlflow.db)")
    parser.add_argument("--experiment", required=True, help="the DVC experiment's name")
    parser.add_argument("--runs", action="store_true", help="print every run too")
    args = parser.parse_args(argv)
    if not args.db.is_file():
        print(f"error: {args.db} does not exist", file=sys.stderr)
        return 1
    runs = timeline(args.db, args.experiment)
    if not runs:
        print(f"error: no finished run tagged dvc_experiment={args.experiment}", file=sys.stderr)
        return 1
    if args.runs:
        for r in runs:
            gap = "" if r["gap"] is None else f"{r['gap']:.1f}"
            print(f"{r['name']:45s} {r['seconds']:9.1f} s  gap {gap:>6s}")
    s = summary(runs)
    print(
        f"{s['runs']} runs: {s['run_seconds']:.0f} s inside runs, {s['gap_seconds']:.0f} s between"
        f" them (mean gap {s['mean_gap']:.1f} s, median {s['median_gap']:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
