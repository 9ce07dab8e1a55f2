"""The train stage's MLflow run, kept by a side process that starts before the stage imports torch.

Importing MLflow and opening its SQLite store take about 2 s on a 2-core CPU (SQLAlchemy and
MLflow's ORM classes), as long as torch's own import; one after the other they were half of a
small train stage's fixed cost. :func:`side_run` starts ``python -m metalearn.tracking_process``
first thing and tells it, as JSON lines over a pipe, the run's params, each metric and the end;
it answers with the run id when the run has ended. Start, end and metric times are the stage's
own, so MLflow shows when training ran, not when the side process caught up.

Failures: a store that cannot be used ends the side process with a message, raised in the stage
as :class:`~metalearn.tracking.TrackingError` at its next metric (seconds in, not at the end of
a long training); an exception in the stage ends the run FAILED; a stage that dies without
ending its run (kill -9) leaves it KILLED. When MLflow is imported already (a test session, a
notebook) there is nothing to overlap: the same protocol runs in a thread of this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

SRC = Path(__file__).resolve().parents[1]


def _now() -> int:
    return int(time.time() * 1000)  # MLflow's timestamps: milliseconds


class SideRun:
    """The stage's end of the pipe: :meth:`start`, :meth:`log` (the metrics callback of
    :func:`metalearn.training.meta_train_seeds`) and :meth:`finish`, which returns the run id."""

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
        from metalearn.tracking import TrackingError  # loads MLflow: on this failure path only

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

    def _check(self) -> None:
        """Raise the side process's error, if it has reported one."""
        with contextlib.suppress(queue.Empty):
            reply = self._replies.get_nowait()
            raise self._failure(reply)

    def start(self, spec: Mapping[str, Any], learner: str, benchmark: str, meta: Any) -> None:
        """Open the run (its start time is now) with :func:`flat_params` as its params."""
        params = flat_params(spec, meta)
        self._send(op="start", time=_now(), params=params, learner=learner, benchmark=benchmark)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self._check()
        values = {k: float(v) for k, v in values.items()}
        self._send(op="metrics", time=_now(), step=step, values=values)

    def finish(self, metrics: Mapping[str, float] = {}, status: str = "FINISHED") -> str | None:
        """End the run (``metrics`` logged first, at step 0); wait for it; its id."""
        self._ended = True
        self._send(op="end", time=_now(), status=status, metrics=dict(metrics))
        reply = self._replies.get()  # the run id, an error, or None: the side has gone
        self._close()
        if reply is None or "error" in reply:
            raise self._failure(reply)
        self.run_id = reply["run_id"]
        return self.run_id

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
    from metalearn.config import flatten

    cell = {k: v for k, v in spec.items() if k not in ("learner", "benchmark", "dataset")}
    return flatten({**cell, "data": dict(episodes_meta)})


@contextlib.contextmanager
def side_run() -> Iterator[SideRun]:
    """Start the tracking side (a process, or a thread when MLflow is loaded already); an
    exception in the block ends the run FAILED and propagates."""
    run = _thread() if "mlflow" in sys.modules else _process()
    try:
        yield run
    except BaseException:
        if not run._ended:
            with contextlib.suppress(Exception):
                run.finish(status="FAILED")
        raise
    if not run._ended:
        run.finish()


def _process() -> SideRun:
    # this checkout's code, as the stage runs it (a queued experiment's copy, not an install)
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    process = subprocess.Popen(
        [sys.executable, "-m", "metalearn.tracking_process"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    return SideRun(process.stdin, process.stdout, process)


def _thread() -> SideRun:
    requests_read, requests_write = os.pipe()
    replies_read, replies_write = os.pipe()

    def work() -> None:
        with open(requests_read) as requests, open(replies_write, "w") as replies:
            serve(requests, replies)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    return SideRun(open(requests_write, "w"), open(replies_read), worker)


def serve(requests: TextIO, replies: TextIO) -> None:
    """The side's loop: one MLflow run from ``start`` to ``end``; KILLED if the requests end
    first (the stage died); any failure is reported as ``{"error": ...}``, the run FAILED."""
    from metalearn import tracking

    def reply(**message: Any) -> None:
        with contextlib.suppress(BrokenPipeError):  # the stage has gone: nobody to tell
            replies.write(json.dumps(message) + "\n")
            replies.flush()

    run_id, log = None, None
    try:
        tracking.open_store()  # the slow part (imports, the store's set-up), before any request
        for line in requests:
            message = json.loads(line)
            op = message.pop("op")
            if op == "start":
                start, experiment = message.pop("time"), tracking.experiment_id()
                run_id = tracking.open_train_run(experiment, start_time=start, **message)
                log = tracking.MetricBuffer(run_id)
            elif op == "metrics" and log is not None:
                log(message["step"], message["values"], timestamp=message["time"])
            elif op == "end":
                if run_id is not None:
                    log.flush()
                    tracking.log_metrics(run_id, message["metrics"], timestamp=message["time"])
                    tracking.end_train_run(run_id, message["status"], end_time=message["time"])
                reply(run_id=run_id)
                return
        if run_id is not None:
            tracking.end_train_run(run_id, "KILLED", end_time=_now())
    except Exception as error:  # noqa: BLE001 - every failure goes back to the stage as one line
        if run_id is not None:
            with contextlib.suppress(Exception):
                tracking.end_train_run(run_id, "FAILED", end_time=_now())
        reply(error=tracking.describe(error))


def main() -> None:
    """``python -m metalearn.tracking_process``: serve stdin; replies go to the original stdout,
    and anything MLflow prints goes to stderr instead (it would break the replies)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C: the stage ends the run, or dies (KILLED)
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin, replies)
    with contextlib.suppress(BrokenPipeError):
        replies.close()
    sys.stderr.flush()
    os._exit(0)  # the run has ended and been written: skip MLflow's half-second teardown


if __name__ == "__main__":
    main()
