"""One stage's command, run where Ray places it; its processes end with the task.

Runs in a Ray worker, so it imports nothing heavy: the command itself loads what it needs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import ray

from metalearn.lifetime import die_with_parent

# A stopped stage removes its scratch outputs and ends its MLflow run KILLED (metalearn.lifetime)
# within seconds; after this long it is killed outright.
STOP_SECONDS = 30.0
_POLL_SECONDS = 0.2


@ray.remote(max_retries=0)
def run_stage(
    commands: Sequence[str], cwd: str, env: Mapping[str, str], clear: Sequence[str], log: str
) -> tuple[int, float]:
    """Run ``commands`` one after another through the shell, as ``dvc repro`` does, with their
    output in the file ``log``: the exit status of the first that fails (or 0), and the seconds
    they took.

    The stage sees the GPUs Ray gave this task in ``CUDA_VISIBLE_DEVICES`` and no other (none
    when it was given none). When Ray cancels the task (the runner stopping), the command gets
    SIGTERM, then SIGKILL after :data:`STOP_SECONDS`; should the worker itself end, the kernel
    sends the command SIGTERM.
    """
    gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
    env = {**env, "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus)}
    for path in clear:
        _remove(Path(cwd, path))
    shell = os.environ.get("SHELL") or "/bin/sh"
    start = time.monotonic()
    with open(log, "w") as out:
        for command in commands:
            process = subprocess.Popen(
                [shell, "-c", command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip
            try:
                code = _wait(process)
            except BaseException:  # cancelled (KeyboardInterrupt) or the worker ending
                _stop(process)
                raise
            if code != 0:
                return code, time.monotonic() - start
    return 0, time.monotonic() - start


def _wait(process: subprocess.Popen) -> int:
    """The command's exit status. Ray cancels a task by raising KeyboardInterrupt in it, which
    needs the interpreter running, not blocked in one long ``waitpid``."""
    while True:
        try:
            return process.wait(_POLL_SECONDS)
        except subprocess.TimeoutExpired:
            continue


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the command's process group, SIGKILL if it is still there later."""
    for signum, wait in ((signal.SIGTERM, STOP_SECONDS), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
