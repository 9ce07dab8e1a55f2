"""Run the stale part of a DVC pipeline with up to N stages at once, scheduled by Ray.

A stage starts when every stage upstream of it is done and ``dvc status`` finds it stale, in a
Ray task that asks for the stage's ``meta.resources`` (dvc.yaml); the runner records each
finished stage in ``dvc.lock`` as ``dvc commit`` does (stages that finish together in one write),
so the outcome is what a sequential ``dvc repro`` leaves. The first failing stage stops the
others and fails the run with its error line; what finished stays recorded, and a rerun goes on
with what is still stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ray

from metalearn.errors import StageError
from metalearn.lifetime import interruptible, stop_if_interrupted
from metalearn.run import plan
from metalearn.run.plan import StageJob
from metalearn.run.stage_task import STOP_SECONDS, run_stage

RUNS = Path(".dvc/tmp/metalearn-run")  # the runner's lock and each stage's log


class StageFailed(StageError):
    """A stage's command exited with an error (its last error line is the message)."""


class RunnerBusy(StageError):
    """Another runner holds this workspace."""


@dataclass
class Outcome:
    ran: list[str] = field(default_factory=list)  # in the order they finished
    up_to_date: int = 0
    seconds: float = 0.0


def run_pipeline(
    root: Path,
    targets: list[str],
    jobs: int,
    gpus: int | None = None,
    echo: Callable[[str], None] = print,
) -> Outcome:
    """Bring ``targets`` (default: ``dvc.yaml``) up to date, ``jobs`` stages at a time at most.
    ``gpus``: the GPUs a local Ray instance declares (default: those it detects); with
    ``RAY_ADDRESS`` set, the runner joins that cluster instead."""
    root = root.resolve()
    with exclusive(root / RUNS / "lock"):
        stages = plan.load(root, targets or ["dvc.yaml"])
        with ray_instance(gpus) as resources:
            return _Schedule(root, stages, jobs, resources, echo).run()


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock for the run: one runner per workspace (two would start the same
    stages and race on their outputs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise RunnerBusy(
                f"another metalearn.run (pid {holder}) is running in this workspace; wait for "
                f"it to finish or stop it (kill {holder}), then run this again"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield


@contextlib.contextmanager
def ray_instance(gpus: int | None) -> Iterator[dict[str, float]]:
    """A local Ray instance for the run, or the cluster ``RAY_ADDRESS`` names; its resources."""
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
    else:
        ray.init(num_gpus=gpus, include_dashboard=False, **quiet)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


class _Schedule:
    def __init__(self, root, stages: list[StageJob], jobs, resources, echo) -> None:
        self.root = root
        self.pending = {stage.name: stage for stage in stages}
        self.queue: list[StageJob] = []  # stale and ready, waiting for a slot
        self.running: dict[ray.ObjectRef, StageJob] = {}
        self.done: set[str] = set()
        self.jobs = max(1, jobs)
        self.resources = resources
        self.echo = echo
        self.outcome = Outcome()

    def run(self) -> Outcome:
        start = time.monotonic()
        try:
            with interruptible(at_once=False):  # stop_if_interrupted() below acts on it
                while self.pending or self.queue or self.running:
                    self._start_ready()
                    if self.running:
                        self._finish(self._wait())
                    elif self.pending and not self.queue:
                        raise RuntimeError(f"stages that never become ready: {list(self.pending)}")
                    stop_if_interrupted()
        except BaseException:
            self._stop_running()
            raise
        self.outcome.seconds = time.monotonic() - start
        return self.outcome

    def _start_ready(self) -> None:
        """Queue the stale stages whose upstream is done, then start what the slots allow. A
        stage found up to date is done at once, which may make its downstream ready."""
        while ready := [s for s in self.pending.values() if s.upstream <= self.done]:
            stale = plan.stale(self.root, [s.name for s in ready])
            for stage in ready:
                del self.pending[stage.name]
                if stage.name in stale:
                    self.queue.append(stage)
                else:
                    self.done.add(stage.name)
                    self.outcome.up_to_date += 1
        while self.queue and len(self.running) < self.jobs:
            self._start(self.queue.pop(0))

    def _start(self, stage: StageJob) -> None:
        gpus = stage.gpus if self.resources.get("GPU", 0) >= stage.gpus else 0
        cpus = min(stage.cpus, self.resources.get("CPU", 1))
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        task = run_stage.options(num_cpus=cpus, num_gpus=gpus)
        ref = task.remote(
            stage.commands, stage.wdir, {**env, **stage.env}, stage.clear, str(self._log(stage))
        )
        self.running[ref] = stage

    def _log(self, stage: StageJob) -> Path:
        return self.root / RUNS / (re.sub(r"[^\w@.-]+", "_", stage.name) + ".log")

    def _wait(self) -> list[ray.ObjectRef]:
        """The tasks that have finished, at least one (several finish together on a big run:
        they are recorded in one write of ``dvc.lock``)."""
        refs = list(self.running)
        while not ray.wait(refs, num_returns=1, timeout=1.0)[0]:
            stop_if_interrupted()
        return ray.wait(refs, num_returns=len(refs), timeout=0)[0]

    def _finish(self, finished: list[ray.ObjectRef]) -> None:
        succeeded, failed = [], []
        for ref in finished:
            stage = self.running.pop(ref)
            code, seconds = ray.get(ref)
            (failed if code else succeeded).append((stage, code, seconds))
        plan.record(self.root, [stage.name for stage, _, _ in succeeded])
        for stage, _, seconds in succeeded:
            self.done.add(stage.name)
            self.outcome.ran.append(stage.name)
            last = _lines(self._log(stage))[-1:] or ["done"]
            self.echo(f"{stage.name} ({seconds:.1f} s): {last[0]}")
        if failed:
            stage, code, _ = failed[0]
            log = self._log(stage)
            raise StageFailed(
                f"stage {stage.name} failed (exit {code}): {_error_line(log)} (its output: "
                f"{log.relative_to(self.root)}); the stages finished before it are recorded "
                "in dvc.lock, and a rerun goes on with what is still stale"
            )

    def _stop_running(self) -> None:
        """Cancel the running stages and wait for them to stop (their outputs are left as they
        were, their MLflow runs end KILLED: metalearn.lifetime). One that finished before its
        cancellation took effect is recorded like any other."""
        refs = list(self.running)
        if not refs:
            return
        for ref in refs:
            ray.cancel(ref)
        finished, left = ray.wait(refs, num_returns=len(refs), timeout=STOP_SECONDS + 10)
        for ref in left:
            ray.cancel(ref, force=True)
        succeeded = [self.running[ref].name for ref in finished if _exit_code(ref) == 0]
        with contextlib.suppress(StageError):
            plan.record(self.root, succeeded)
        for stage in self.running.values():
            self.echo(f"{stage.name}: {'done' if stage.name in succeeded else 'stopped'}")
        self.running.clear()


def _exit_code(ref: ray.ObjectRef) -> int | None:
    try:
        return ray.get(ref, timeout=0)[0]
    except (ray.exceptions.RayError, KeyboardInterrupt):  # cancelled, or its worker gone
        return None


def _error_line(log: Path) -> str:
    """A failed stage's own error line (``error: …``), else the last line it printed."""
    lines = _lines(log)
    errors = [line for line in lines if line.lower().startswith("error")]
    return (errors or lines or ["(no output)"])[-1]


def _lines(log: Path) -> list[str]:
    """The stage's non-empty output lines, stripped."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]
