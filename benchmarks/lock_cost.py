"""What DVC's ``dvc.lock`` rewrite costs a stage, and what a smaller lock would cost.

    .venv/bin/python benchmarks/lock_cost.py [/tmp/metalearn-gap/repo/dvc.lock] [--rounds 3]

After every stage DVC re-reads the whole ``dvc.lock`` with ruamel's round-trip (comment-keeping,
pure Python) loader, updates the stage's entry and writes the whole file back
(``dvc.dvcfile.Lockfile.dump_stages``), so the cost grows with the pipeline. This times that
load and dump with DVC's own functions on a lock (the one ``benchmarks/stage_gap.py`` leaves has
the CPU recipe's 112 train stages), then on the same lock with the train, evaluate and tune
stages' code deps (``src/``, ``pipeline/``) collapsed into one file each: the size a lock would
have if those stages depended on one code manifest instead of every module they import. Since
stage ``code`` (commit ``f0903e7``) they do, and the two measure the same lock; the comparison
shows what the manifests save on a lock from an older checkout (``stage_gap.py --source``).
Best of ``--rounds`` for each. It also times the safe (read-only) load that every DVC command
pays once (``dvc status``, the start of ``dvc repro``): ruamel's C loader when
``ruamel.yaml.clib`` is installed, as ``pyproject.toml`` asks.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from dvc.utils.serialize import dumps_yaml, parse_yaml, parse_yaml_for_update

CELL_STAGES = ("train", "train-cf", "evaluate", "tune")


def rewrite_seconds(text: str, rounds: int) -> tuple[float, float]:
    """Best load and best dump time of ``text`` as DVC does it for one stage."""
    load = dump = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        data = parse_yaml_for_update(text, "dvc.lock")
        loaded = time.perf_counter()
        dumps_yaml(data)
        load, dump = min(load, loaded - start), min(dump, time.perf_counter() - loaded)
    return load, dump


def safe_load_seconds(text: str, rounds: int) -> float:
    """Best time of DVC's read-only load of ``text`` (its lock, once a command)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        parse_yaml(text, "dvc.lock")
        best = min(best, time.perf_counter() - start)
    return best


def with_one_code_dep(text: str) -> str:
    """The lock with each cell stage's code deps replaced by one dep (the first of them)."""
    lock: dict[str, Any] = parse_yaml_for_update(text, "dvc.lock")
    for name, stage in lock["stages"].items():
        if name.split("@")[0] in CELL_STAGES:
            code = [d for d in stage["deps"] if d["path"].startswith(("src/", "pipeline/"))]
            stage["deps"] = [d for d in stage["deps"] if d not in code] + code[:1]
    return dumps_yaml(lock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path("/tmp/metalearn-gap/repo/dvc.lock")  # stage_gap.py's copy
    parser.add_argument("lock", type=Path, nargs="?", default=default)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    text = args.lock.read_text()
    stages = len(parse_yaml_for_update(text, "dvc.lock")["stages"])
    try:
        import _ruamel_yaml  # noqa: F401 - ruamel.yaml.clib's C loader

        loader = "C loader"
    except ImportError:
        loader = "pure-Python loader: pip install ruamel.yaml.clib"
    seconds = safe_load_seconds(text, args.rounds)
    print(f"read-only load once a DVC command: {seconds:.2f} s ({loader})")
    for label, lock in (("as is", text), ("one code dep a cell stage", with_one_code_dep(text))):
        load, dump = rewrite_seconds(lock, args.rounds)
        print(
            f"{label}: {stages} stages, {len(lock.splitlines())} lines;"
            f" round-trip load {load:.2f} s + dump {dump:.2f} s = {load + dump:.2f} s a stage"
        )


if __name__ == "__main__":
    main()
