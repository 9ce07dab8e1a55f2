"""python -m metalearn.run: DVC stages several at once under Ray, on small DVC projects whose
stages are tiny scripts (the tiny pipeline itself: tests/pipeline)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from dvc.repo import Repo

from metalearn.run import plan

# The stages' one script: each mode is a stage's behaviour, coordinated through files.
STAGE = """
import os, sys, time
mode, out = sys.argv[1], sys.argv[2]

def wait_for(path, seconds=60):
    end = time.time() + seconds
    while not os.path.exists(path) and time.time() < end:
        time.sleep(0.05)

open(out + ".started", "w").close()
if mode == "gpu":  # its GPUs, once every peer has started too (they run at once)
    for peer in sys.argv[3:]:
        wait_for(peer + ".started")
    open(out, "w").write(os.environ["CUDA_VISIBLE_DEVICES"])
elif mode == "hold":  # runs while the file "hold" exists
    while os.path.exists("hold"):
        time.sleep(0.05)
    open(out, "w").write("held")
elif mode == "fail":  # fails a second after the file it names appears
    wait_for(sys.argv[3])
    time.sleep(1.0)
    sys.exit("error: the data is bad; fix it")
elif mode == "gate":  # writes once the file "go" exists
    wait_for("go")
    open(out, "w").write("gated")
else:
    open(out, "w").write(mode)
"""


def project(tmp_path: Path, stages: dict) -> Path:
    """A git and DVC repository with ``stages`` in its dvc.yaml and the stage script."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "stage.py").write_text(STAGE)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return tmp_path


def stage(mode: str, out: str, *args: str, deps=(), gpus=None, cpus=0.5) -> dict:
    definition = {"cmd": " ".join(["python stage.py", mode, out, *args]), "deps": list(deps)}
    definition["outs"] = [out]
    definition["meta"] = {"resources": {"cpus": cpus, **({"gpus": gpus} if gpus else {})}}
    return definition


def runner(repo: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | (env or {})
    cmd = [sys.executable, "-m", "metalearn.run", *args]
    return subprocess.Popen(
        cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def recorded(repo: Path) -> set[str]:
    lock = repo / "dvc.lock"
    return set(yaml.safe_load(lock.read_text())["stages"]) if lock.exists() else set()


def dvc_status(repo: Path) -> str:
    return subprocess.run(
        [sys.executable, "-m", "dvc", "status"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def stage_processes(repo: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if "stage.py" in " ".join(process.info["cmdline"] or []) and process.info["cwd"] == str(
                repo
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_two_gpus_declared_to_ray_go_one_to_each_train_stage_running_at_once(tmp_path):
    """Ray sets CUDA_VISIBLE_DEVICES: each of two concurrent GPU stages sees a GPU of its own,
    and the stage after them starts when both are recorded. A rerun finds nothing stale."""
    repo = project(tmp_path, {
        "train_a": stage("gpu", "a.txt", "b.txt", gpus=1),
        "train_b": stage("gpu", "b.txt", "a.txt", gpus=1),
        "report": stage("report", "report.txt", deps=["a.txt", "b.txt"]),
    })  # fmt: skip
    code, out, err = finish(runner(repo, "--jobs", "2", "--gpus", "2"))
    assert code == 0, err
    assert {(repo / "a.txt").read_text(), (repo / "b.txt").read_text()} == {"0", "1"}
    assert "3 stages ran, 0 were up to date" in out
    assert recorded(repo) == {"train_a", "train_b", "report"}
    assert dvc_status(repo) == "Data and pipelines are up to date."
    code, out, err = finish(runner(repo, "--jobs", "2", "--gpus", "2"))
    assert code == 0 and "0 stages ran, 3 were up to date" in out, (out, err)


def test_a_failing_stage_stops_the_running_ones_and_a_rerun_goes_on(tmp_path):
    repo = project(tmp_path, {
        "quick": stage("quick", "quick.txt"),
        "held": stage("hold", "held.txt"),
        "bad": stage("fail", "bad.txt", "quick.txt"),
        "after": stage("after", "after.txt", deps=["bad.txt"]),
    })  # fmt: skip
    (repo / "hold").touch()
    start = time.monotonic()
    code, out, err = finish(runner(repo, "--jobs", "3"))
    assert code == 1, (out, err)
    assert "error: stage bad failed (exit 1): error: the data is bad; fix it" in err
    assert time.monotonic() - start < 30  # held was stopped, not waited for
    assert recorded(repo) == {"quick"}
    assert not (repo / "held.txt").exists() and not stage_processes(repo)
    assert "held: stopped" in out

    (repo / "hold").unlink()
    definition = yaml.safe_load((repo / "dvc.yaml").read_text())
    definition["stages"]["bad"] = stage("fixed", "bad.txt")
    (repo / "dvc.yaml").write_text(yaml.safe_dump(definition))
    code, out, err = finish(runner(repo, "--jobs", "3"))
    assert code == 0, err
    assert "3 stages ran, 1 were up to date" in out  # quick is not run again
    assert dvc_status(repo) == "Data and pipelines are up to date."


def test_a_second_runner_in_the_workspace_is_refused(tmp_path):
    repo = project(tmp_path, {"one": stage("one", "one.txt")})
    lock = repo / ".dvc/tmp/metalearn-run/lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242")
        held.flush()
        code, _, err = finish(runner(repo), timeout=60)
    assert code == 1
    assert "another metalearn.run (pid 4242) is running in this workspace" in err
    assert not (repo / "one.txt").exists()


@pytest.mark.slow
def test_stages_finishing_together_wait_for_dvcs_lock_then_are_recorded(tmp_path):
    """Four stages finish at once while another DVC process holds the repository lock: the
    runner retries and records all four; a lock that stays taken fails with the fix."""
    names = ["a", "b", "c", "d"]
    repo = project(tmp_path, {n: stage("gate", f"{n}.txt") for n in names})
    process = runner(repo, "--jobs", "4")
    deadline = time.monotonic() + 60
    while not all((repo / f"{n}.txt.started").exists() for n in names):
        assert time.monotonic() < deadline and process.poll() is None, finish(process)
        time.sleep(0.1)
    dvc = Repo(str(repo))
    dvc.lock.lock()
    (repo / "go").touch()
    time.sleep(5)
    dvc.lock.unlock()
    code, out, err = finish(process)
    assert code == 0, err
    assert recorded(repo) == set(names)
    assert dvc_status(repo) == "Data and pipelines are up to date."

    (repo / "dvc.lock").unlink()
    (repo / "go").unlink()
    for n in names:
        (repo / f"{n}.txt").unlink()
    process = runner(repo, "--jobs", "4", env={"METALEARN_DVC_LOCK_SECONDS": "2"})
    while not all((repo / f"{n}.txt.started").exists() for n in names):
        assert process.poll() is None, finish(process)
        time.sleep(0.1)
    dvc.lock.lock()
    (repo / "go").touch()
    code, out, err = finish(process)
    dvc.lock.unlock()
    assert code == 1
    assert (
        "DVC's lock" in err
        and "stayed taken for 2 s" in err
        and "METALEARN_DVC_LOCK_SECONDS" in err
    )


@pytest.mark.slow
def test_ctrl_c_stops_the_runner_and_its_stages_within_seconds(tmp_path):
    repo = project(tmp_path, {"held": stage("hold", "held.txt"), "one": stage("one", "one.txt")})
    (repo / "hold").touch()
    process = runner(repo, "--jobs", "2")
    deadline = time.monotonic() + 60
    while not (repo / "held.txt.started").exists():
        assert time.monotonic() < deadline and process.poll() is None, finish(process)
        time.sleep(0.1)
    stopped_at = time.monotonic()
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process, timeout=60)
    assert code == 128 + signal.SIGINT, (out, err)
    assert time.monotonic() - stopped_at < 15
    assert "stopped by SIGINT" in err
    assert not (repo / "held.txt").exists() and not stage_processes(repo)
    assert "held" not in recorded(repo)


def test_the_pipelines_train_and_evaluate_stages_ask_ray_for_a_gpu():
    """dvc.yaml's meta.resources: what the runner asks Ray for, per stage."""
    stages = yaml.safe_load((Path(__file__).parents[1] / "dvc.yaml").read_text())["stages"]
    for name in ("train", "evaluate"):
        definition = stages[name].get("do", stages[name])  # foreach: do; matrix: the stage
        resources = definition["meta"]["resources"]
        assert resources["gpus"] == 1 and resources["cpus"] == "${train.threads}", (name, resources)


@pytest.mark.parametrize("args", [["--jobs", "0"], ["--gpus", "-1"], ["no-such-stage"]])
def test_bad_arguments_get_one_line(tmp_path, args):
    repo = project(tmp_path, {"one": stage("one", "one.txt")})
    code, _, err = finish(runner(repo, *args), timeout=60)
    assert code in (1, 2), err
    assert "Traceback" not in err
    assert any(m in err for m in ("--jobs must be 1 or more", "--gpus must be 0", "no-such-stage"))


def test_the_plan_reads_a_project_from_another_working_directory(tmp_path, monkeypatch):
    """The runner's parts take the project's root, wherever the caller stands (DVC resolves a
    target against the working directory)."""
    (tmp_path / "project").mkdir()
    repo = project(
        tmp_path / "project", {"a": stage("a", "a.txt"), "b": stage("b", "b.txt", deps=["a.txt"])}
    )
    monkeypatch.chdir(tmp_path)
    jobs = {job.name: job for job in plan.load(repo, ["dvc.yaml"])}
    assert set(jobs) == {"a", "b"} and jobs["b"].upstream == {"a"}
    assert plan.stale(repo, ["a", "b"]) == {"a", "b"}
