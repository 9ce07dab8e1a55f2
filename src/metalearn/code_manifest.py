"""Stage code: one manifest per stage script, the hashes of exactly the modules it runs.

Every other stage depends on its manifest (``code/<script>.json``) instead of listing the modules
itself: DVC reads and rewrites the whole ``dvc.lock`` after every stage it runs, and the modules
listed in each stage made it several times longer (``benchmarks/lock_cost.py``). The manifest
keeps the invalidation exact: an algorithm edit changes the train, evaluate, tune and efficiency
manifests and leaves download's and episodify's as they were, so DVC re-runs no download.

What a script runs is found by running it: its module is executed in a child forked from a
fresh interpreter that has imported torch and nothing of metalearn (a script's ``__main__``
block does not run; a stage module imports all it uses at its top), and every ``metalearn``
module loaded is listed, with those that a loaded module names in ``RUNS``: the modules it runs
besides its imports (a dataset module imported by name, the train stage's MLflow side process).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from metalearn import paths
from metalearn.io import atomic_dir

# Run in one fresh interpreter: it loads the libraries every stage shares, then forks a child
# per script that runs the script's imports (its __main__ block does not run) and the modules
# that loaded modules name in RUNS, and lists the metalearn files loaded. The fork shares the
# libraries' import (torch alone is 1.4 s), not metalearn's.
LIST_IMPORTS = r"""
import importlib, importlib.util, json, os, sys, traceback

def metalearn_files(script):
    spec = importlib.util.spec_from_file_location("stage", script)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    done = set()
    while True:  # what loaded modules run besides their imports (their RUNS), to a fixed point
        runs = {
            name for loaded, module in list(sys.modules.items()) if loaded.startswith("metalearn")
            for name in getattr(module, "RUNS", ())
        } - done
        if not runs:
            break
        for name in sorted(runs):
            importlib.import_module(name)
        done |= runs
    return sorted(
        m.__file__ for name, m in sys.modules.items()
        if name.startswith("metalearn") and getattr(m, "__file__", None)
    )

# Not mlflow or polars: their imports start thread pools, and a fork copies their locks held.
for library in ("torch", "pydantic"):
    try:
        importlib.import_module(library)
    except ImportError:
        pass
children = []
for script in json.loads(sys.argv[1]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            result = {"files": metalearn_files(script)}
        except BaseException:
            result = {"error": traceback.format_exc(limit=-3)}
        with os.fdopen(write, "w") as out:
            json.dump(result, out)
        os._exit(0)
    os.close(write)
    children.append((script, pid, read))
results = {}
for script, pid, read in children:
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    results[script] = json.loads(text) if text else {"error": "the process died importing it"}
print(json.dumps(results))
"""


def modules_run(root: Path, scripts: list[Path]) -> dict[Path, list[Path]]:
    """The files each stage script runs: itself and every metalearn module it loads, relative
    to ``root``."""
    jobs = [str(root / s) for s in scripts]
    command = [sys.executable, "-c", LIST_IMPORTS, json.dumps(jobs)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=300)
    except subprocess.TimeoutExpired as error:
        message = "listing the stage scripts' imports took over 300 s; rerun pipeline/code.py"
        raise RuntimeError(message) from error
    if done.returncode != 0:
        raise RuntimeError(f"listing the stage scripts' imports failed:\n{done.stderr.strip()}")
    results = json.loads(done.stdout)
    found = {}
    for script in scripts:
        result = results[str(root / script)]
        if "error" in result:
            raise RuntimeError(f"{script} does not import cleanly:\n{result['error'].strip()}")
        files = [Path(f).resolve() for f in result["files"]]
        outside = [f for f in files if not f.is_relative_to(root)]
        if outside:
            raise RuntimeError(
                f"{script} loads metalearn from {outside[0].parent}, not from this checkout's "
                "src/; run it with this checkout's interpreter (make install)"
            )
        found[script] = sorted({script, *(f.relative_to(root) for f in files)})
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stage_scripts(root: Path) -> list[Path]:
    """Every stage script but this stage's own."""
    return sorted(p.relative_to(root) for p in (root / "pipeline").glob("*.py") if p.stem != "code")


def write_manifests(root: Path = Path()) -> dict[str, int]:
    """Write ``code/<script>.json`` for every stage script; all or nothing."""
    root = root.resolve()
    manifests = {
        script: {str(f): sha256(root / f) for f in files}
        for script, files in modules_run(root, stage_scripts(root)).items()
    }
    with atomic_dir(root / paths.CODE) as folder:
        for script, files in manifests.items():
            text = json.dumps(files, indent=2, sort_keys=True) + "\n"
            (folder / f"{script.stem}.json").write_text(text)
    return {script.stem: len(files) for script, files in manifests.items()}
