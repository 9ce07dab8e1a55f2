"""Wall time of the pipeline's train, evaluate and report stages: ``dvc repro`` against
``python -m metalearn.run --jobs 1`` and ``--jobs 2``, in interleaved rounds.

    .venv/bin/python benchmarks/runner_speed.py [--rounds 2] [--dir /tmp/metalearn-runner]

Two pipelines at the smoke run's tiny settings, each in a scratch copy of this checkout:
``smoke`` (every learner on one synthetic benchmark: 8 train stages) and ``cells14`` (two
synthetic benchmarks: 14 train stages, benchmarks/stage_gap.py's one group). Each copy is built
once, then every timed command starts from a new ``train.seed``, so each re-trains every cell,
evaluates and reports; the best round counts. Alone on the machine: the commands share its cores.

It first prints a projection (``--recipe-only``: that alone): the CPU recipe's stages on 1 to 8
devices, bounded from the recipe's recorded times (:func:`recipe_bounds`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

from metalearn.run import plan
from metalearn.smoke import SMOKE, clean_env, commit, copy_checkout, run_captured, set_params

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage_gap import gap_params  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = {
    "smoke": (SMOKE, ["dvc repro", "jobs 1", "jobs 2"]),
    "cells14": (gap_params(1), ["jobs 1", "jobs 2"]),
}
COMMANDS = {
    "dvc repro": ["dvc", "repro"],
    "jobs 1": [sys.executable, "-m", "metalearn.run", "--jobs", "1"],
    "jobs 2": [sys.executable, "-m", "metalearn.run", "--jobs", "2"],
}


def timed(repo: Path, cmd: list[str]) -> tuple[float, str]:
    """The command's wall time and its output."""
    start = time.perf_counter()
    done = run_captured(cmd, repo, clean_env(), 3600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done.stdout


def stage_seconds(log: str) -> dict[str, float]:
    """Each stage's wall time from the runner's lines (``name (12.3 s): its last line``)."""
    found = re.findall(r"^(\S+) \(([\d.]+) s\): ", log, flags=re.MULTILINE)
    return {name: float(seconds) for name, seconds in found}


def projected(seconds: dict[str, float], upstream: dict[str, frozenset[str]], slots: int) -> float:
    """The wall time of ``seconds``' stages on ``slots`` devices, scheduled as the runner does
    (a stage starts when its upstream is done and a slot is free, in pipeline order); stages
    absent from ``seconds`` take no time. A projection: it knows nothing of contention."""
    order = list(upstream)
    finish: dict[str, float] = {}
    free = [0.0] * slots
    while len(finish) < len(order):
        ready = [s for s in order if s not in finish and upstream[s] <= finish.keys()]
        # the ready stage that can start first: upstream done and a slot free
        start_of = {
            s: max([finish[u] for u in upstream[s]] + [min(free) if s in seconds else 0.0])
            for s in ready
        }
        stage = min(ready, key=lambda s: (start_of[s], order.index(s)))
        slot = free.index(min(free))
        finish[stage] = start_of[stage] + seconds.get(stage, 0.0)
        if stage in seconds:
            free[slot] = finish[stage]
    return max(finish.values())


# The CPU recipe's run of 2026-12-01 (docs/protocols.md "Where the recipe's time goes"): its
# train stages' training seconds, their count, the mean gap between one train stage's last metric
# and the next one's start, of which DVC's rewrite of dvc.lock (py-spy), the evaluate stages'
# seconds and count, and the longest train stage (MAML on Omniglot 5-way 1-shot).
RECIPE = {"train": 3098.0, "trains": 112, "gap": 11.8, "dvc_lock": 2.6, "evaluate": 1483.0,
          "evaluates": 16, "longest_train": 486.0}  # fmt: skip


def recipe_bounds(slots: int) -> tuple[float, float, float, float]:
    """``(work, critical path, lower, upper)``: the CPU recipe's stages on ``slots`` devices as
    fast as this machine's two cores, from its aggregate times (its per-stage times were not
    kept). ``work`` is every stage's own time (its interpreter and set-up included, DVC's
    rewrite of dvc.lock not: the runner does that on the head while others run); the critical
    path is the longest train stage, then an evaluate stage of mean length. Any schedule takes
    at least ``max(work / slots, path)``; Ray's list scheduling at most
    ``work / slots + (1 - 1 / slots) path`` (Graham's bound)."""
    r = RECIPE
    work = r["train"] + r["trains"] * (r["gap"] - r["dvc_lock"]) + r["evaluate"]
    path = r["longest_train"] + r["gap"] + r["evaluate"] / r["evaluates"]
    return work, path, max(work / slots, path), work / slots + (1 - 1 / slots) * path


def clean(repo: Path) -> None:
    """``dvc status dvc.yaml`` has nothing to say: every stage recorded."""
    done = run_captured(["dvc", "status", "dvc.yaml"], repo, clean_env(), 600)
    if "up to date" not in done.stdout:
        raise SystemExit(f"{repo}: stale after the run:\n{done.stdout}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/metalearn-runner"))
    parser.add_argument(
        "--recipe-only", action="store_true", help="only the CPU recipe's projection (no runs)"
    )
    args = parser.parse_args()
    print_recipe_projection()
    if args.recipe_only:
        return
    shutil.rmtree(args.dir, ignore_errors=True)
    repos = {}
    for name, (params, _) in PIPELINES.items():
        repos[name] = args.dir.resolve() / name
        copy_checkout(ROOT, repos[name])
        set_params(repos[name], params)
        commit(repos[name], f"{name} params")
        print(f"building {name} ...", flush=True)
        timed(repos[name], COMMANDS["dvc repro"])
    best: dict[tuple[str, str], float] = {}
    one_job: dict[str, dict[str, float]] = {}  # the best --jobs 1 round's stage times
    seed = 100
    for round_ in range(args.rounds):
        for name, (_, arms) in PIPELINES.items():
            for arm in arms:
                seed += 1
                set_params(repos[name], {"train.seed": seed})
                wall, log = timed(repos[name], COMMANDS[arm])
                clean(repos[name])
                if arm == "jobs 1" and wall < best.get((name, arm), float("inf")):
                    one_job[name] = stage_seconds(log)
                best[name, arm] = min(wall, best.get((name, arm), wall))
                print(f"round {round_ + 1} {name} {arm}: {wall:.1f} s", flush=True)
    print("\n| pipeline | command | best wall |\n|---|---|---|")
    for (name, arm), wall in best.items():
        print(f"| {name} | {arm} | {wall:.1f} s |")
    print("\nProjected from the best --jobs 1 round's stage times (stages only, no start-up):")
    print("| pipeline | sum of stages | 1 slot | 2 slots | 4 slots | 8 slots |")
    print("|---|---|---|---|---|---|")
    for name, seconds in one_job.items():
        upstream = {job.name: job.upstream for job in plan.load(repos[name], ["dvc.yaml"])}
        walls = [projected(seconds, upstream, n) for n in (1, 2, 4, 8)]
        print(
            f"| {name} | {sum(seconds.values()):.1f} s | "
            + " | ".join(f"{w:.1f} s" for w in walls)
            + " |"
        )


def print_recipe_projection() -> None:
    work, path, _, _ = recipe_bounds(1)
    print(
        f"Projection, not a measurement: the CPU recipe's stages ({work:.0f} s of work, a "
        f"critical path of {path:.0f} s) on N devices each as fast as this machine\n"
        "| devices | at least | at most |\n|---|---|---|"
    )
    for slots in (1, 2, 4, 8):
        _, _, lower, upper = recipe_bounds(slots)
        print(f"| {slots} | {lower / 60:.1f} min | {upper / 60:.1f} min |")


if __name__ == "__main__":
    main()
