"""Faults through the real stage script (pipeline/train.py in a fresh interpreter): what the user
sees, and what is left behind, when the tracking store is gone, training diverges or a stage is
killed."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import psutil
import pytest

from metalearn import paths
from tests.tiny import TINY as SMALL

ROOT = Path(__file__).resolve().parents[1]
B = "cosmixture-shot50"
TINY = [*SMALL, "train.seeds=1", f"++pipeline.benchmarks.{B}.train.seeds=1"]  # one seed


@pytest.fixture
def workdir(make_workdir):
    return make_workdir(TINY)


def stage_env(workdir: Path, uri: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    return {**env, "MLFLOW_TRACKING_URI": uri or f"sqlite:///{workdir / 'mlflow.db'}"}


def train(workdir: Path, *overrides: str, uri=None, wait: bool = True, learner: str = "maml"):
    env = stage_env(workdir, uri)
    cmd = [sys.executable, str(ROOT / "pipeline/train.py"), f"learner={learner}", f"benchmark={B}"]
    process = subprocess.Popen(
        [*cmd, *TINY, *overrides], cwd=workdir, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    if not wait:
        return process
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def statuses(workdir: Path) -> list[str]:
    with sqlite3.connect(workdir / "mlflow.db") as db:
        return [s for (s,) in db.execute("select status from runs order by start_time")]


def test_an_unreachable_tracking_server_fails_in_seconds_with_one_line(workdir):
    start = time.perf_counter()
    code, _, err = train(workdir, uri="http://127.0.0.1:9")
    seconds = time.perf_counter() - start
    assert code == 1 and "Traceback" not in err
    assert err.startswith("error: MLflow tracking server http://127.0.0.1:9 does not answer")
    assert "unset it" in err and len(err.strip().splitlines()) == 1
    # interpreter and torch start-up included, under make test's two processes; MLflow's default
    # retries would take minutes
    assert seconds < 30, seconds
    assert not paths.model("maml", B).exists()


def test_a_misconfigured_tracking_uri_names_itself_and_the_fix(workdir):
    code, _, err = train(workdir, uri="nosuchscheme://x")
    assert code == 1 and "Traceback" not in err
    assert "MLflow store nosuchscheme://x cannot be used" in err and "unset it" in err


def test_a_diverging_loss_fails_the_stage_and_its_run_and_keeps_earlier_outputs(workdir):
    assert train(workdir)[0] == 0
    kept = {p: p.read_bytes() for p in (workdir / "models").rglob("*.pt")}
    kept |= {p: p.read_bytes() for p in (workdir / "results").rglob("*") if p.is_file()}
    code, _, err = train(workdir, "train.meta_lr=100000.0", "train.iterations=6")
    assert code == 1 and "Traceback" not in err
    assert f"error: maml on {B}: the meta-training loss diverged at iteration" in err
    hint = "Lower algo.inner_lr (now 0.01) or train.meta_lr (now 100000), or algo.steps (now 2)"
    assert hint in err
    assert {p: p.read_bytes() for p in kept} == kept
    assert statuses(workdir) == ["FINISHED", "FAILED"]


def wait_for(workdir: Path, status: str) -> None:
    for _ in range(600):
        with contextlib.suppress(sqlite3.OperationalError):  # the store's tables not made yet
            if (workdir / "mlflow.db").exists() and status in statuses(workdir):
                return
        time.sleep(0.1)
    raise AssertionError(f"no {status} run in 60 s: {statuses(workdir)}")


@contextlib.contextmanager
def endless_stage(workdir: Path) -> Iterator[subprocess.Popen]:
    """A train stage that runs until killed; killed with its side process if the test fails."""
    process = train(workdir, "train.iterations=100000", wait=False)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def test_a_stage_killed_alone_leaves_its_run_killed_by_the_side_process(workdir):
    with endless_stage(workdir) as process:
        wait_for(workdir, "RUNNING")
        process.send_signal(signal.SIGKILL)  # the stage's process only: its MLflow side lives on
        process.communicate(timeout=30)  # the pipes close when the side process has ended too
    assert statuses(workdir) == ["KILLED"]


def test_a_killed_stage_group_leaves_a_run_that_its_next_start_marks_killed(workdir):
    with endless_stage(workdir) as process:
        wait_for(workdir, "RUNNING")
        os.killpg(process.pid, signal.SIGKILL)  # the stage and its side process: a lost machine
        process.communicate(timeout=30)
    assert statuses(workdir) == ["RUNNING"]  # what nobody could end
    code, out, err = train(workdir)
    assert code == 0, err
    assert statuses(workdir) == ["KILLED", "FINISHED"]


def evaluate(workdir: Path, *overrides: str):
    cmd = [sys.executable, str(ROOT / "pipeline/evaluate.py"), f"benchmark={B}", *TINY]
    done = subprocess.run(
        [*cmd, *overrides], cwd=workdir, env=stage_env(workdir), text=True,
        capture_output=True, timeout=300,
    )  # fmt: skip
    return done.returncode, done.stderr


@pytest.mark.slow
def test_evaluate_refuses_a_misfiled_or_unreadable_checkpoint_naming_it(workdir):
    learners = "pipeline.learners=[maml,fomaml]"
    for learner in ("maml", "fomaml"):
        assert train(workdir, learners, learner=learner)[0] == 0
    maml = workdir / paths.model("maml", B)
    kept = maml.read_bytes()
    maml.write_bytes((workdir / paths.model("fomaml", B)).read_bytes())  # fomaml.pt over maml.pt
    code, err = evaluate(workdir, learners)
    assert code == 1 and "Traceback" not in err
    assert f"holds the spec of fomaml on {B}, not the one train@maml-{B} trains now" in err
    assert not (workdir / paths.eval_metrics(B)).exists()
    maml.write_bytes(kept[: len(kept) // 2])  # truncated
    code, err = evaluate(workdir, learners)
    assert code == 1 and "Traceback" not in err
    assert (
        f"models/{B}/maml.pt cannot be read" in err and f"dvc repro --force train@maml-{B}" in err
    )
    maml.write_bytes(kept)
    assert evaluate(workdir, learners)[0] == 0


def outputs(workdir: Path) -> dict[Path, bytes]:
    """Every file the train stage writes (models, curves, metrics files), by path."""
    found = {p: p.read_bytes() for p in (workdir / "models").rglob("*") if p.is_file()}
    return found | {p: p.read_bytes() for p in (workdir / "results").rglob("*") if p.is_file()}


def alive(process: subprocess.Popen) -> list[str]:
    """The processes of ``process``'s session still running (the stage and its helpers)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if os.getsid(p.info["pid"]) == process.pid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(" ".join(p.info["cmdline"] or []))
    return found


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)
def test_a_signal_stops_the_stage_and_its_side_process_writing_nothing(workdir, signum):
    assert train(workdir)[0] == 0
    kept = outputs(workdir)
    with endless_stage(workdir) as process:
        wait_for(workdir, "RUNNING")
        start = time.perf_counter()
        process.send_signal(signum)  # the stage alone, as `docker stop` or Ctrl-C in a script
        _, err = process.communicate(timeout=30)
        assert time.perf_counter() - start < 10
        deadline = time.monotonic() + 10
        while alive(process) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alive(process) == []
    assert process.returncode == 128 + signum
    assert "Traceback" not in err
    assert f"error: stopped by {signal.Signals(signum).name}: no output written" in err
    assert outputs(workdir) == kept
    assert statuses(workdir) == ["FINISHED", "KILLED"]


# Injected into a stage's interpreter (sitecustomize): the metrics file, the train stage's last
# output, cannot be written, as on a full disk.
FULL_DISK = """
import errno, pathlib
write_text = pathlib.Path.write_text
def full(self, *args, **kwargs):
    if "results/train" in str(self):
        raise OSError(errno.ENOSPC, "No space left on device")
    return write_text(self, *args, **kwargs)
pathlib.Path.write_text = full
"""


def test_a_full_disk_mid_write_keeps_every_earlier_output_and_fails_the_run(workdir, tmp_path):
    assert train(workdir)[0] == 0
    kept = outputs(workdir)
    hook = tmp_path / "full-disk"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FULL_DISK)
    env = {**stage_env(workdir), "PYTHONPATH": str(hook)}
    cmd = [sys.executable, str(ROOT / "pipeline/train.py"), "learner=maml", f"benchmark={B}"]
    done = subprocess.run(
        [*cmd, *TINY, "train.seed=5"], cwd=workdir, env=env, text=True, capture_output=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error: no space left on the device" in done.stderr
    assert "the earlier outputs are unchanged" in done.stderr
    assert outputs(workdir) == kept  # the new model and curve were written, then discarded
    leftovers = [p.name for p in workdir.rglob(".*") if p.suffix in (".tmp", ".old")]
    assert leftovers == []
    assert statuses(workdir) == ["FINISHED", "FAILED"]


@pytest.mark.slow  # the pipeline's test_an_input_changed_since_its_stage_wrote_it... in make test
@pytest.mark.parametrize("tamper", ["first tasks", "a query point of every task", "a new column"])
def test_tampered_episodes_are_refused_naming_the_file_and_the_fix(workdir, tamper):
    """Rows deleted or changed in an episodes file: evaluate and train stop before any work,
    instead of scoring what is left; nothing is written."""
    only = "pipeline.learners=[maml]"
    assert train(workdir, only)[0] == 0
    assert evaluate(workdir, only)[0] == 0
    kept = outputs(workdir)
    test = workdir / paths.episodes(B) / "test.parquet"
    table = pl.read_parquet(test)
    if tamper == "first tasks":
        table = table.filter(pl.col("task") >= 2)
    elif tamper == "a query point of every task":
        table = table.filter(pl.int_range(pl.len()).over("task") != pl.len().over("task") - 1)
    else:
        table = table.with_columns(extra=pl.lit(1))
    table.write_parquet(test)
    code, err = evaluate(workdir, only)
    assert code == 1 and "Traceback" not in err
    assert f"{paths.episodes(B) / 'test.parquet'} has been changed since episodify@{B}" in err
    assert f"dvc checkout {paths.episodes(B)}" in err and f"dvc repro -f episodify@{B}" in err
    code, _, err = train(workdir, only)
    assert code == 1 and "has been changed since episodify" in err
    assert outputs(workdir) == kept


def test_a_damaged_sqlite_store_fails_evaluate_before_any_work_in_one_line(workdir):
    """The store truncated after training: evaluate names the file and the SQLite fix, keeps
    the traceback in a log file, and writes nothing."""
    only = "pipeline.learners=[maml]"
    assert train(workdir, only)[0] == 0
    store = workdir / "mlflow.db"
    store.write_bytes(store.read_bytes()[:4096])  # truncated: not a database any more
    code, err = evaluate(workdir, only)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"error: MLflow store sqlite:///{store} cannot be used" in err
    assert f"mv {store} {store}.broken" in err
    log = workdir / "mlflow-error.log"
    assert f"(full error in {log})" in err and "Traceback" in log.read_text()
    assert not (workdir / paths.eval_metrics(B)).exists()


@contextlib.contextmanager
def locked(store: Path, seconds: float) -> Iterator[None]:
    """``store`` held in an exclusive SQLite transaction (another writer) for ``seconds``."""
    db = sqlite3.connect(store, isolation_level=None, check_same_thread=False)
    db.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(seconds, db.rollback)
    release.start()
    try:
        yield
    finally:
        release.cancel()
        db.close()


@pytest.mark.slow
def test_a_busy_sqlite_store_is_waited_for_then_fails_in_one_line(workdir, monkeypatch):
    """A store another process holds locked: the stage waits up to METALEARN_STORE_SECONDS for
    it, succeeding when the lock goes in time, else one line naming the wait and the fix."""
    only = "pipeline.learners=[maml]"
    assert train(workdir, only)[0] == 0
    kept = outputs(workdir)
    store = workdir / "mlflow.db"
    monkeypatch.setenv("METALEARN_STORE_SECONDS", "2")
    with locked(store, seconds=60):
        code, _, err = train(workdir, only)
        assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert f"another process held the SQLite file {store} locked for 2 s" in err
        assert "METALEARN_STORE_SECONDS" in err and "mlflow-error.log" in err
        code, err = evaluate(workdir, only)
        assert code == 1 and len(err.strip().splitlines()) == 1 and "locked for 2 s" in err
    assert outputs(workdir) == kept
    monkeypatch.setenv("METALEARN_STORE_SECONDS", "60")
    with locked(store, seconds=3):
        assert train(workdir, only)[0] == 0
    assert statuses(workdir) == ["FINISHED", "FINISHED"]  # the locked store took no run
