"""The pipeline as DVC sees it: the stages some targets need, their commands, resources and
upstream stages; which of them are stale; and a finished stage recorded in ``dvc.lock``.

DVC runs a pipeline one stage at a time and holds its repository lock while a stage runs. Here
a stage's command runs outside DVC (as ``dvc repro`` would run it: through the shell, in the
stage's folder, with ``DVC_ROOT`` and ``DVC_STAGE`` set) and DVC itself records it afterwards
(what ``dvc commit --force`` does, through DVC's Python API), so the lock is held for the
bookkeeping only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import networkx as nx
from dvc.exceptions import DvcException
from dvc.lock import LockError
from dvc.repo import Repo, lock_repo

from metalearn.errors import StageError

LOCK_PATIENCE_ENV = "METALEARN_DVC_LOCK_SECONDS"
T = TypeVar("T")
# DVC's API logs what its commands print ("Updating lock file 'dvc.lock'"): the runner prints
# its own line a stage; DVC's warnings and errors stay.
logging.getLogger("dvc").setLevel(logging.WARNING)


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
    with _repo(root) as repo:
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

    def status() -> set[str]:
        with _repo(root) as repo:
            return set(repo.status(targets=names)) & set(names)

    return _patiently(root, "status", status)


def record(root: Path, names: list[str]) -> None:
    """Record finished stages in ``dvc.lock`` as ``dvc commit --force`` does (their
    dependencies' and outputs' hashes, outputs into DVC's cache), writing each ``dvc.lock`` once
    for all of them: DVC re-reads and rewrites the whole file on every write."""
    if not names:
        return

    def commit() -> None:
        with _repo(root) as repo, lock_repo(repo):
            files: dict[str, tuple[Any, list[Any]]] = {}
            for name in names:
                for info in repo.stage.collect_granular(name):
                    info.stage.save()
                    info.stage.commit(filter_info=info.filter_info)
                    dvcfile = info.stage.dvcfile
                    files.setdefault(dvcfile.path, (dvcfile, []))[1].append(info.stage)
            for dvcfile, stages in files.values():
                dvcfile.dump_stages(stages, update_pipeline=False)

    _patiently(root, "commit", commit)


@contextlib.contextmanager
def _repo(root: Path) -> Iterator[Repo]:
    """DVC's repository at ``root``, opened from there: DVC reads targets against the cwd."""
    with contextlib.chdir(root), Repo(str(root)) as repo:
        yield repo


def _patiently(root: Path, what: str, call: Callable[[], T]) -> T:
    """``call()``; while another DVC process holds the repository lock (a ``dvc status`` in
    another terminal), again after a growing pause, for up to ``METALEARN_DVC_LOCK_SECONDS``
    (default 120 s) in all. DVC's own failures become one line."""
    patience = float(os.environ.get(LOCK_PATIENCE_ENV, "120"))
    deadline = time.monotonic() + patience
    pause = 0.25
    while True:
        try:
            return call()
        except LockError:
            if time.monotonic() + pause > deadline:
                raise DvcError(
                    f"DVC's lock ({root}/.dvc/tmp/lock) stayed taken for {patience:.0f} s: "
                    "another dvc command is running in this workspace (a dvc repro, dvc exp "
                    "run or an editor's DVC extension); let it finish or stop it, then run "
                    f"this again (or allow longer: {LOCK_PATIENCE_ENV})"
                ) from None
        except DvcException as error:
            raise DvcError(f"dvc {what} failed: {error}") from None
        time.sleep(pause)
        pause = min(2 * pause, 8.0)
