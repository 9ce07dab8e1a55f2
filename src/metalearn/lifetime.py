"""A stage and its helper processes end together, and a signal ends a stage cleanly.

``dvc`` does not pass SIGTERM (``docker stop``, a scheduler) on to the stage it runs: it exits
and the stage would run on as an orphan, writing outputs that ``dvc.lock`` does not describe.
So a stage asks the kernel for SIGTERM when its parent ends (``prctl(PR_SET_PDEATHSIG)`` on
Linux) and watches its parent besides (a shell between ``dvc`` and the stage, other systems);
:func:`interruptible` turns SIGTERM and SIGINT into :class:`~metalearn.errors.InterruptedStage`
in the main thread, so the stage's ``finally`` blocks remove its scratch outputs and end its
MLflow run KILLED. Helper processes (workers, the tracking side process) call
:func:`die_with_parent` first thing.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator

from metalearn.errors import InterruptedStage

_PR_SET_PDEATHSIG = 1
_SHELLS = {"sh", "bash", "dash", "zsh", "fish", "ksh"}
_POLL_SECONDS = 0.5


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Have the kernel send ``signum`` to this process when its parent ends (Linux only)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signum))


def _process(pid: int) -> tuple[str, int]:
    """``(name, parent pid)`` of a process, from ``/proc``."""
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    name = text[text.index("(") + 1 : text.rindex(")")]
    return name, int(text[text.rindex(")") + 1 :].split()[1])


def _watched_parents() -> list[int]:
    """The parent, and the shell's parent when the parent is a shell (``sh -c 'python …'``)."""
    parent = os.getppid()
    with contextlib.suppress(OSError, ValueError, IndexError):
        name, grandparent = _process(parent)
        if name in _SHELLS and grandparent > 1:
            return [parent, grandparent]
    return [parent]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch(parents: list[int], stop: threading.Event) -> None:
    original = os.getppid()
    while not stop.wait(_POLL_SECONDS):
        if os.getppid() != original or not all(_alive(p) for p in parents):
            os.kill(os.getpid(), signal.SIGTERM)
            return


_interruption: InterruptedStage | None = None


def interruption() -> InterruptedStage | None:
    """The signal that stopped this process, if one did: whatever exception reaches the stage's
    top level after it (a library may wrap :class:`InterruptedStage` in its own error, as
    torch.compile does mid-compilation) is reported as this."""
    return _interruption


def stop_if_interrupted() -> None:
    """Raise the stage's interruption again, if a signal came: an exception raised by a signal
    handler is lost when the handler runs inside a finalizer or a library that swallows it,
    so long loops call this once per iteration."""
    if _interruption is not None:
        raise _interruption


@contextlib.contextmanager
def interruptible(at_once: bool = True) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`InterruptedStage` (once: a second
    signal during the clean-up has its default effect), and the end of the parent process
    sends SIGTERM. The handler raises it at once, or with ``at_once=False`` only records it for
    :func:`stop_if_interrupted`: for a loop whose library calls an exception from a handler
    would leave half done (Ray's, in the runner)."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def stop(signum: int, frame: object) -> None:
        global _interruption
        for s in previous:
            signal.signal(s, signal.SIG_DFL)
        name = signal.Signals(signum).name
        message = f"stopped by {name}: no output written, its run KILLED"
        _interruption = InterruptedStage(message, signum)
        # the stage's one line says it all: libraries interrupted mid-way (torch.compile's
        # code generation) would log their own failure, hundreds of lines of it
        logging.disable(logging.CRITICAL)
        if at_once:
            raise _interruption

    for s in previous:
        signal.signal(s, stop)
    die_with_parent()
    done = threading.Event()
    threading.Thread(target=_watch, args=(_watched_parents(), done), daemon=True).start()
    try:
        yield
    finally:
        done.set()
        for s, handler in previous.items():
            signal.signal(s, handler)
