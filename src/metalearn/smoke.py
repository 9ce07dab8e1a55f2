"""A first run in about a minute: the real pipeline at tiny settings, in a scratch copy.

    python -m metalearn.smoke [--dir .smoke]      # make smoke

Copies this checkout's tracked files into ``--dir`` (a fresh git repository, so the workspace's
params.yaml, dvc.lock, results and MLflow store stay as they are), writes tiny params (one
synthetic benchmark, every learner, a few meta-iterations) and runs ``dvc repro report`` there:
download, episodify, train, evaluate and report, with MLflow runs in its own ``mlflow.db``. No
dataset mirror is needed. The numbers mean nothing; the run shows the parts working together.
The pipeline test (tests/pipeline) builds its copy with the same two functions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from metalearn.io import atomic_file

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = "cosmixture-shot50"

# Every learner of params.yaml on one synthetic benchmark; sizes of the tests' tiny pipeline.
# Tuning and the efficiency study (their own pipelines: dvc repro tuning/dvc.yaml,
# benchmarks/dvc.yaml) are shrunk alike, to seconds, should they be run in the copy.
SMOKE: dict[str, Any] = {
    "pipeline.cf_benchmarks": [],
    "tune.benchmarks": [BENCHMARK],
    "tune.learners": ["maml"],
    "tune.inner_lr": [0.01, 0.1],
    "tune.meta_lr": [0.001],
    "tune.iterations": 2,
    "efficiency.steps": [1, 2],
    "efficiency.meta_batch": {"cf_mlp": 2},
    "efficiency.variants": {"imaml": {"learner": "imaml"}},
    "efficiency.repeats": 1,
    "efficiency.accuracy_steps": [1],
    "efficiency.accuracy_meta_batch": 1,
    "efficiency.peers": {"cf_mlp": {"meta_batch": 2, "steps": [1]}},
    "efficiency.peer_seconds": 0.05,
    "pipeline.datasets": ["cosmixture"],
    "pipeline.benchmarks": {BENCHMARK: {"dataset": "cosmixture", "setting": "shot50"}},
    "algo.steps": 2,
    "algo.maml.steps": None,
    "algo.mamlpp.steps": None,
    "train.iterations": 3,
    "train.val_every": 3,
    "train.meta_batch": 2,
    "eval.tasks": 3,
    "data.cosmixture.functions": {"train": 8, "val": 3, "test": 3},
}


def copy_checkout(source: Path, dest: Path) -> None:
    """``dest`` becomes a one-commit git repository of ``source``'s tracked and untracked,
    not ignored files (what a clone of the working tree would hold)."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=source, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in files:
        if (source / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, dest / name)
    commit(dest, "copy of the working tree", init=True)


def commit(repo: Path, message: str, init: bool = False) -> None:
    git = ["git", "-c", "user.name=metalearn", "-c", "user.email=metalearn@localhost"]
    steps = [["init", "-q"]] if init else []
    for args in [*steps, ["add", "-A"], ["commit", "-qm", message]]:
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)


def run_captured(
    cmd: list[str], cwd: Path, env: Mapping[str, str], timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """``cmd``'s exit status and output, read from files rather than pipes: DVC's queue
    workers are forked from ``dvc exp run --run-all`` and keep its stdout open after it exits
    (until their idle monitor stops them, or for good when a shutdown broadcast is missed), so a
    pipe would wait for them instead of for the command."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        done = subprocess.run(
            cmd, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            timeout=timeout, check=False,
        )  # fmt: skip
        out.seek(0)
        err.seek(0)
        read = (f.read().decode(errors="replace") for f in (out, err))
        return subprocess.CompletedProcess(cmd, done.returncode, *read)


def set_params(repo: Path, changes: Mapping[str, Any]) -> None:
    """Set dotted keys of ``repo/params.yaml`` (each key's parents must exist)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[last] = value
    # A new file, not an in-place write: git (and `git checkout HEAD -- params.yaml`) must see
    # the edit even when it lands in the same second as the checkout that wrote the old one and
    # DVC's autostage has rewritten the index since (dulwich keeps no racy-git guard; the
    # inode tells it apart).
    with atomic_file(repo / "params.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(params, sort_keys=False))


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without MLflow/DVC/metalearn settings (the copy's own store and data),
    this interpreter's scripts first on PATH (DVC runs ``python`` from it), one thread."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "METALEARN_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["OMP_NUM_THREADS"] = "1"  # tiny models: threads only add overhead
    return {**env, **extra}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / ".smoke", help="scratch copy (replaced)")
    args = parser.parse_args(argv)
    repo = args.dir.resolve()
    if repo == ROOT or ROOT.is_relative_to(repo):
        parser.error(f"--dir {repo} would replace this checkout: name a scratch directory")
    shutil.rmtree(repo, ignore_errors=True)
    started = time.perf_counter()
    copy_checkout(ROOT, repo)
    set_params(repo, SMOKE)
    commit(repo, "smoke params")
    print(f"dvc repro report in {repo} (every learner on {BENCHMARK}, tiny settings) ...")
    done = subprocess.run(["dvc", "repro", "report"], cwd=repo, env=clean_env(), check=False)
    if done.returncode != 0:
        print(f"smoke run failed (dvc repro exit {done.returncode}); its files are in {repo}")
        return 1
    print(
        f"\nsmoke run done in {time.perf_counter() - started:.0f} s.\n"
        f"  results: {repo / 'results/summary.md'} (plots in {repo / 'results/plots'})\n"
        f"  MLflow:  mlflow ui --backend-store-uri sqlite:///{repo / 'mlflow.db'}\n"
        f"  DVC:     cd {repo} && dvc exp show"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
