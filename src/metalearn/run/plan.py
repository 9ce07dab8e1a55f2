"""The pipeline as DVC sees it: the stages some targets need, their commands, resources and
upstream stages; which of them are stale; and a finished stage recorded in ``dvc.lock``.

DVC runs a pipeline one stage at a time and holds its repository lock while a stage runs. Here
a stage's command runs outside DVC (as ``dvc repro`` would run it: through the shell, in the
stage's folder, with ``DVC_ROOT`` and ``DVC_STAGE`` set) and DVC itself records it afterwards
(``dvc commit --force``), so the lock is held for the bookkeeping only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
from dvc.exceptions import DvcException
from dvc.repo import Repo

from metalearn.errors import StageError

# DVC prints this when another DVC process holds the repository lock.
_LOCKED = re.compile(r"unable to acquire lock", re.IGNORECASE)
LOCK_PATIENCE_ENV = "METALEARN_DVC_LOCK_SECONDS"


class DvcError(StageError):
    """A DVC command failed (its own message), or DVC's lock stayed taken."""


@dataclass(frozen=True)
class StageJob:
    """One DVC stage as the runner schedules it.

    ``name`` is DVC's address (``train@maml-jester-shot10``, ``tuning/dvc.yaml:tune@…``);
    ``gpus`` and ``cpus`` come from the stage's ``meta.resources`` in dvc.yaml (default: no GPU,
    one CPU); ``clear`` are the outputs without ``persist``, which ``dvc repro`` deletes before
    the command runs.
    """

    name: str
    commands: tuple[str, ...]
    wdir: str
    upstream: frozenset[str]
    gpus: float
    cpus: float
    env: dict[str, str]
    clear: tuple[str, ...]


def load(root: Path, targets: list[str]) -> list[StageJob]:
    """The targets' stages and every stage upstream of them, upstream first (``dvc repro``'s
    order). A target is what ``dvc repro`` takes: a stage, ``path/dvc.yaml:stage`` or a
    ``dvc.yaml`` (all its stages)."""
    with Repo(str(root)) as repo:
        stages = []
        for target in targets:
            try:
                stages += repo.stage.collect(target, with_deps=True)
            except DvcException as error:  # no such stage, a dvc.yaml DVC cannot read
                raise DvcError(f"{target}: {error}") from None
        graph = repo.index.graph.subgraph(stages)  # edges point from a stage to its upstream
        jobs = []
        for stage in reversed(list(nx.topological_sort(graph))):
            resources = (stage.meta or {}).get("resources", {})
            commands = stage.cmd if isinstance(stage.cmd, list) else stage.cmd.splitlines()
            jobs.append(
                StageJob(
                    name=stage.addressing,
                    commands=tuple(c for c in commands if c.strip()),
                    wdir=str(stage.wdir),
                    upstream=frozenset(s.addressing for s in graph.successors(stage)),
                    gpus=float(resources.get("gpus", 0)),
                    cpus=float(resources.get("cpus", 1)),
                    env={"DVC_ROOT": repo.root_dir, "DVC_STAGE": stage.addressing},
                    clear=tuple(str(out.fs_path) for out in stage.outs if not out.persist),
                )
            )
    return jobs


def stale(root: Path, names: list[str]) -> set[str]:
    """Those of the stages ``names`` that ``dvc status`` finds changed: their command, a
    dependency, a parameter or an output differs from ``dvc.lock``, or they never ran."""
    if not names:
        return set()
    shown = json.loads(dvc(root, "status", "--json", *names) or "{}")
    return set(shown) & set(names)


def record(root: Path, names: list[str]) -> None:
    """Record finished stages in ``dvc.lock`` (their dependencies' and outputs' hashes, outputs
    into DVC's cache), as ``dvc repro`` does after each stage."""
    if names:
        dvc(root, "commit", "--force", *names)


def dvc(root: Path, *args: str) -> str:
    """``dvc args`` in ``root``, its standard output. While another DVC process holds the
    repository lock (a ``dvc status`` in another terminal), try again with a growing pause, for
    up to ``METALEARN_DVC_LOCK_SECONDS`` (default 120 s) in all."""
    patience = float(os.environ.get(LOCK_PATIENCE_ENV, "120"))
    deadline = time.monotonic() + patience
    pause = 0.25
    while True:
        done = subprocess.run(
            [sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True
        )
        if done.returncode == 0:
            return done.stdout
        message = _last_error(done.stderr or done.stdout)
        if not _LOCKED.search(done.stderr + done.stdout):
            raise DvcError(f"dvc {args[0]} failed: {message}")
        if time.monotonic() + pause > deadline:
            raise DvcError(
                f"DVC's lock ({root}/.dvc/tmp/lock) stayed taken for {patience:.0f} s: another "
                "dvc command is running in this workspace (a dvc repro, dvc exp run or an "
                "editor's DVC extension); let it finish or stop it, then run this again "
                f"(or allow longer: {LOCK_PATIENCE_ENV})"
            )
        time.sleep(pause)
        pause = min(2 * pause, 8.0)


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["(no message)"])[-1]
