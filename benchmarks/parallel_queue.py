"""Queued experiments one at a time against two at once (``dvc exp run --run-all -j N``).

    .venv/bin/python benchmarks/parallel_queue.py [--dir /tmp/metalearn-queue] [--rounds 2]

Builds the smoke run's scratch copy (every learner on the synthetic benchmark, tiny settings,
``python -m metalearn.smoke``'s params; ``--iterations`` sets the meta-iterations), runs its
``dvc repro report`` once, then queues two experiments of the same target that re-train every
cell (each its own ``train.seed``, so DVC's run cache cannot skip one) and runs the queue with
``-j 1`` and with ``-j 2``, alternating which goes first. Every experiment's MLflow runs go to
the copy's one SQLite store; the script checks each experiment left one FINISHED run per cell.
Wall time of the whole queue, best round counting.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sqlite3
import time
from pathlib import Path

from metalearn.smoke import SMOKE, clean_env, commit, copy_checkout, run_captured, set_params

ROOT = Path(__file__).resolve().parents[1]


def dvc(repo: Path, *args: str) -> None:
    done = run_captured(["dvc", *args], repo, clean_env())
    if done.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)}: exit {done.returncode}\n{done.stderr}")


def stop_workers(repo: Path, patience: float = 120.0) -> None:
    """No queue worker left to take the next round's experiments (a lingering worker would
    make a ``-j 1`` round run two at once)."""
    dvc(repo, "queue", "stop")
    deadline = time.monotonic() + patience
    status = ["dvc", "queue", "status"]
    while "0 active, 0 idle" not in run_captured(status, repo, clean_env()).stdout:
        if time.monotonic() > deadline:
            raise SystemExit(f"queue workers still alive {patience:.0f} s after dvc queue stop")
        time.sleep(2)


def finished_cells(repo: Path, name: str) -> int:
    with sqlite3.connect(repo / "mlflow.db") as db:
        return db.execute(
            "select count(*) from runs join experiments using (experiment_id) "
            "where experiments.name = ? and runs.status = 'FINISHED'",
            (f"metalearn/{name}",),
        ).fetchone()[0]


def run_queue(repo: Path, jobs: int, seeds: list[int], cells: int) -> float:
    names = [f"j{jobs}-seed{seed}" for seed in seeds]
    for name, seed in zip(names, seeds, strict=True):
        dvc(repo, "exp", "run", "--queue", "report", "-S", f"train.seed={seed}", "-n", name)
    start = time.perf_counter()
    dvc(repo, "exp", "run", "--run-all", "-j", str(jobs))
    seconds = time.perf_counter() - start
    stop_workers(repo)
    for name in names:
        found = finished_cells(repo, name)
        if found != cells:  # a lost or unfinished run: the timing would not count every cell
            raise SystemExit(f"{name}: {found} FINISHED MLflow runs, expected {cells}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/metalearn-queue"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=SMOKE["train.iterations"])
    args = parser.parse_args()
    repo = args.dir.resolve() / "repo"
    shutil.rmtree(repo.parent, ignore_errors=True)
    copy_checkout(ROOT, repo)
    set_params(repo, {**SMOKE, "train.iterations": args.iterations})
    commit(repo, "queue benchmark params")
    dvc(repo, "repro", "report")
    commit(repo, "baseline")
    cells = finished_cells(repo, "workspace")  # the baseline's runs: one a train cell
    seeds = itertools.count(1)
    best: dict[int, float] = {1: float("inf"), 2: float("inf")}
    for r in range(args.rounds):
        for jobs in (1, 2) if r % 2 == 0 else (2, 1):
            seconds = run_queue(repo, jobs, [next(seeds), next(seeds)], cells)
            best[jobs] = min(best[jobs], seconds)
            print(
                f"round {r + 1}: 2 experiments x {cells} train cells, -j {jobs}: {seconds:.1f} s",
                flush=True,
            )
    print(
        f"best: -j 1 {best[1]:.1f} s, -j 2 {best[2]:.1f} s "
        f"({best[1] / best[2]:.2f}x; {args.iterations} meta-iterations a cell)"
    )


if __name__ == "__main__":
    main()
