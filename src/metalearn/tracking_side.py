"""The MLflow side of a train stage's run (:mod:`metalearn.tracking_process` starts it): one run
from ``start`` to ``end``, told over a pipe as JSON lines, answered likewise."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from typing import Any, TextIO

from metalearn import tracking


def _now() -> int:
    return int(time.time() * 1000)  # MLflow's timestamps: milliseconds


def serve(requests: TextIO, replies: TextIO) -> None:
    """The side's loop: one MLflow run from ``start`` to ``end``; KILLED if the requests end
    first (the stage died); any failure is reported as ``{"error": ...}``, the run FAILED."""

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
                reply(run_id=run_id)
            elif op == "metrics" and log is not None:
                log(message["step"], message["values"], timestamp=message["time"])
            elif op == "end":
                if run_id is not None:
                    log.flush()
                    tracking.log_metrics(run_id, message["metrics"], timestamp=message["time"])
                    tracking.end_train_run(run_id, message["status"], end_time=message["time"])
                reply(ended=run_id)
                return
        if run_id is not None:
            tracking.end_train_run(run_id, "KILLED", end_time=_now())
    except Exception as error:  # noqa: BLE001 - every failure goes back to the stage as one line
        if run_id is not None:
            with contextlib.suppress(Exception):
                tracking.end_train_run(run_id, "FAILED", end_time=_now())
        reply(error=tracking.describe(error))


def main() -> None:
    """``python -m metalearn.tracking_side``: serve stdin; replies go to the original stdout,
    and anything MLflow prints goes to stderr instead (it would break the replies)."""
    # Ctrl+C, SIGTERM to the group: the stage ends the run KILLED; should the stage die
    # instead, its pipe closes and this side ends the run KILLED and exits
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
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
