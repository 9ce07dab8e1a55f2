"""The train stage's MLflow run, kept by a side process that starts before the stage imports torch.

Importing MLflow and opening its SQLite store take about 2 s on a 2-core CPU (SQLAlchemy and
MLflow's ORM classes), as long as torch's own import; one after the other they were half of a
small train stage's fixed cost. :func:`start_early` starts ``python -m metalearn.tracking_side``
first thing (the train script calls it before it imports torch), and :class:`SideRun` tells it,
as JSON lines over a pipe, the run's params, each metric and the end; it answers with the run
id once the run is open (the outputs name it) and again once the run has ended. Start, end and
metric times are the stage's own, so MLflow shows when training ran, not when the side caught up.

Failures: a store that cannot be used ends the side process with a message, raised in the stage
as :class:`~metalearn.errors.TrackingError` at its next request; an exception in the stage ends
the run FAILED, a signal KILLED; a stage that dies without ending its run (kill -9) leaves it
KILLED. When MLflow is imported already (a test session, a notebook) there is nothing to
overlap: the same protocol runs in a thread of this process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from metalearn.config import flatten
from metalearn.errors import InterruptedStage, TrackingError
from metalearn.lifetime import interruption

SRC = Path(__file__).resolve().parents[1]
#: The side process's module (stage code lists it among what the train stage runs).
SIDE = "metalearn.tracking_side"
RUNS = (SIDE,)


def _now() -> int:
    return int(time.time() * 1000)  # MLflow's timestamps: milliseconds


class SideRun:
    """The stage's end of the pipe: :meth:`start`, :meth:`log` (the metrics callback of
    :func:`metalearn.parallel.meta_train_seeds`), :meth:`wait_run_id` and :meth:`finish`."""

    def __init__(self, requests: TextIO, replies: TextIO, worker: Any) -> None:
        self._requests, self._worker = requests, worker
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._lock = threading.Lock()
        self.run_id: str | None = None
        self._ended = False
        threading.Thread(target=self._read, args=(replies,), daemon=True).start()

    def _read(self, replies: TextIO) -> None:
        for line in replies:
            self._replies.put(json.loads(line))
        self._replies.put(None)  # the other end closed

    def _failure(self, reply: dict[str, Any] | None) -> Exception:
        if reply is not None and "error" in reply:
            return TrackingError(reply["error"])
        code = self._worker.poll() if isinstance(self._worker, subprocess.Popen) else None
        return TrackingError(f"the MLflow side process ended without a reply (exit {code})")

    def _send(self, **message: Any) -> None:
        try:
            with self._lock:
                self._requests.write(json.dumps(message) + "\n")
                self._requests.flush()
        except (BrokenPipeError, ValueError):  # it has ended: say why
            raise self._failure(self._replies.get()) from None

    def _take(self, block: bool) -> dict[str, Any] | None:
        """The side's next reply (None if ``block`` is false and there is none): the run id is
        kept as it arrives, an error is raised."""
        try:
            reply = self._replies.get(block=block)
        except queue.Empty:
            return None
        if reply is None or "error" in reply:
            raise self._failure(reply)
        if "run_id" in reply:
            self.run_id = reply["run_id"]
        return reply

    def _check(self) -> None:
        """Raise the side process's error, if it has reported one."""
        while self._take(block=False) is not None:
            pass

    def start(self, spec: Mapping[str, Any], learner: str, benchmark: str, meta: Any) -> None:
        """Open the run (its start time is now) with :func:`flat_params` as its params; the
        side opens it while the stage goes on (:meth:`wait_run_id`)."""
        params, dataset = flat_params(spec, meta), episodes_dataset(benchmark, meta)
        self._send(
            op="start", time=_now(), params=params, learner=learner, benchmark=benchmark,
            dataset=dataset,
        )  # fmt: skip

    def wait_run_id(self) -> str:
        """The run's id, once the side has opened it (the outputs name it)."""
        while self.run_id is None:
            self._take(block=True)
        return self.run_id

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self._check()
        values = {k: float(v) for k, v in values.items()}
        self._send(op="metrics", time=_now(), step=step, values=values)

    def finish(self, metrics: Mapping[str, float] = {}, status: str = "FINISHED") -> None:
        """End the run as ``status`` (``metrics`` logged first, at step 0) and wait until it
        is written; raises if it could not be."""
        self._ended = True
        self._send(op="end", time=_now(), status=status, metrics=dict(metrics))
        try:
            while "ended" not in self._take(block=True):
                pass
        finally:
            self._close()

    def _close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._requests.close()
        if isinstance(self._worker, subprocess.Popen):
            self._worker.wait(timeout=60)
        else:
            self._worker.join(timeout=60)


def flat_params(spec: Mapping[str, Any], episodes_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The values that shape this run (its resolved spec, :mod:`metalearn.spec`) flattened to
    dotted keys; the data's come from the episodes it trained on (their ``meta.json``)."""
    cell = {k: v for k, v in spec.items() if k not in ("learner", "benchmark", "dataset")}
    return flatten({**cell, "data": dict(episodes_meta)})


def episodes_dataset(benchmark: str, meta: Mapping[str, Any]) -> dict[str, str]:
    """A benchmark's episodes as an MLflow dataset (the runs table's Dataset column): its name,
    a digest of the files episodify recorded (``meta.json``), where they are."""
    files = meta.get("files", {})
    digest = hashlib.sha256("".join(f["sha256"] for _, f in sorted(files.items())).encode())
    return {
        "name": benchmark,
        "digest": digest.hexdigest()[:16],
        "source_type": "local",
        "source": json.dumps({"uri": f"data/episodes/{benchmark}"}),
    }


_early: subprocess.Popen | None = None


def start_early() -> None:
    """Start the side process now, for the next :func:`side_run` of this process: a stage
    script calls it before importing torch, so that MLflow loads meanwhile."""
    global _early
    if _early is None and "mlflow" not in sys.modules:
        _early = _popen()


@contextlib.contextmanager
def side_run() -> Iterator[SideRun]:
    """The tracking side (the process :func:`start_early` started, a new one, or a thread when
    MLflow is loaded already); an exception in the block ends the run FAILED (KILLED for a
    signal) and propagates."""
    global _early
    if "mlflow" in sys.modules and _early is None:
        run = _thread()
    else:
        process, _early = _early or _popen(), None
        run = SideRun(process.stdin, process.stdout, process)
    try:
        yield run
    except BaseException as error:
        if not run._ended:
            stopped = isinstance(error, InterruptedStage | KeyboardInterrupt)
            stopped = stopped or interruption() is not None  # wrapped by a library
            with contextlib.suppress(Exception):
                run.finish(status="KILLED" if stopped else "FAILED")
        raise
    if not run._ended:
        run.finish()


def _popen() -> subprocess.Popen:
    # this checkout's code, as the stage runs it (a queued experiment's copy, not an install)
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, "-m", SIDE],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _thread() -> SideRun:
    # MLflow is loaded already here (a test session, a notebook); at the top, this import would
    # load it in every train stage, where it takes 2 s that the side process overlaps
    from metalearn.tracking_side import serve

    requests_read, requests_write = os.pipe()
    replies_read, replies_write = os.pipe()

    def work() -> None:
        with open(requests_read) as requests, open(replies_write, "w") as replies:
            serve(requests, replies)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    return SideRun(open(requests_write, "w"), open(replies_read), worker)
