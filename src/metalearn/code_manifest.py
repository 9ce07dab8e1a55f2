"""Stage code: one manifest per stage script, the hashes of exactly the modules it runs.

Every other stage depends on its manifest (``code/<script>.json``) instead of listing the modules
itself. Listed in each stage, a train stage's 25 modules made the recipe's 112-stage ``dvc.lock``
19,376 lines, and DVC reads and rewrites the whole lock after every stage it runs (3.2 s a stage,
``benchmarks/lock_cost.py``). The manifest keeps the invalidation exact: an algorithm edit
changes the train, evaluate, tune and efficiency manifests and leaves download's and episodify's
as they were, so DVC re-runs no download.

What a script runs is found by running it: its module is executed in a fresh interpreter (a
script's ``__main__`` block does not run), then the modules its ``stages.run_<stage>`` function
imports lazily are imported, and every ``metalearn`` module loaded is listed.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from metalearn import paths
from metalearn.io import atomic_dir

# Run in a fresh interpreter: the script's own imports, the modules named on the command line
# (what its stage function imports when it runs), and what those load on their own.
IMPORTS = r"""
import importlib, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("stage", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
names = set(sys.argv[2:])
if "metalearn.data.episodes" in names:  # it imports a benchmark's dataset module by name
    from metalearn.data.episodes import MODULES
    names |= set(MODULES.values())
if "metalearn.tracking_process" in names:  # its side process runs metalearn.tracking
    names.add("metalearn.tracking")
for name in names:
    importlib.import_module(name)
print(json.dumps(sorted(
    m.__file__ for name, m in sys.modules.items()
    if name.startswith("metalearn") and getattr(m, "__file__", None)
)))
"""


def lazy_imports(root: Path, stage: str) -> list[str]:
    """The metalearn modules imported inside ``stages.run_<stage>`` and the stages.py helpers it
    calls (stages.py imports lazily, so a stage loads only what it uses)."""
    tree = ast.parse((root / "src/metalearn/stages.py").read_text())
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    todo, seen, found = [f"run_{stage}"], set(), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        for node in ast.walk(functions[name]):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("metalearn"):
                if node.module == "metalearn":  # from metalearn import paths
                    found |= {f"metalearn.{alias.name}" for alias in node.names}
                else:
                    found.add(node.module)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                todo.append(node.func.id)
    return sorted(found)


def modules_run(root: Path, script: Path) -> list[Path]:
    """The files a stage script runs: itself and every metalearn module it loads, relative to
    ``root``."""
    command = [sys.executable, "-c", IMPORTS, str(root / script), *lazy_imports(root, script.stem)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=root)
    if result.returncode != 0:
        raise RuntimeError(f"{script} does not import cleanly:\n{result.stderr.strip()}")
    files = [Path(f).resolve() for f in json.loads(result.stdout)]
    outside = [f for f in files if not f.is_relative_to(root)]
    if outside:
        raise RuntimeError(
            f"{script} loads metalearn from {outside[0].parent}, not from this checkout's src/; "
            "run it with this checkout's interpreter (make install)"
        )
    return sorted({script, *(f.relative_to(root) for f in files)})


def manifest(root: Path, script: Path) -> dict[str, str]:
    """``{file: sha256}`` for every file ``script`` runs."""
    return {
        str(path): hashlib.sha256((root / path).read_bytes()).hexdigest()
        for path in modules_run(root, script)
    }


def stage_scripts(root: Path) -> list[Path]:
    """Every stage script but this stage's own."""
    return sorted(p.relative_to(root) for p in (root / "pipeline").glob("*.py") if p.stem != "code")


def write_manifests(root: Path = Path()) -> dict[str, int]:
    """Write ``code/<script>.json`` for every stage script; all or nothing."""
    root = root.resolve()
    scripts = stage_scripts(root)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # a subprocess each
        manifests = dict(zip(scripts, pool.map(lambda s: manifest(root, s), scripts), strict=True))
    with atomic_dir(root / paths.CODE) as folder:
        for script, files in manifests.items():
            text = json.dumps(files, indent=2, sort_keys=True) + "\n"
            (folder / f"{script.stem}.json").write_text(text)
    return {script.stem: len(files) for script, files in manifests.items()}
