"""A study kept in the repository: the files of a workspace that ``report check`` recomputes
the report from, and the report's plots, copied into a folder of their own
(``results/studies/<name>``) at the same paths, with the workspace's ``params.yaml``:
``check --root <folder>`` then rechecks it in any clone, whatever the checkout's own params and
results hold by then."""

from __future__ import annotations

import shutil
from pathlib import Path

from metalearn import paths
from metalearn.config import Config, learners_of
from metalearn.errors import DataError
from metalearn.io import Outputs

PARAMS = Path("params.yaml")


def study_files(cfg: Config) -> dict[Path, bool]:
    """What the report of ``cfg``'s pipeline is computed and checked from, relative to the
    workspace, and the report's plots, each mapped to whether every run writes it: params, the
    report, each benchmark's metrics and per-task scores, each train stage's metrics and curve
    do; a benchmark's every-user scores and the plots (absent from studies kept without them)
    need not."""
    files = {PARAMS: True, paths.SUMMARY_MD: True, paths.SUMMARY_JSON: True}
    for benchmark in cfg.pipeline.benchmarks:
        files |= {
            paths.eval_metrics(benchmark): True,
            paths.scores_plot(benchmark): False,
            paths.curves_plot(benchmark): False,
        }
        for learner in learners_of(cfg, benchmark):
            files |= {
                paths.eval_per_task(learner, benchmark): True,
                paths.eval_per_task_all_users(learner, benchmark): False,
                paths.train_metrics(learner, benchmark): True,
                paths.train_curve(learner, benchmark): True,
            }
    return files


def keep(cfg: Config, root: Path, dest: Path) -> int:
    """Copy :func:`study_files` from the workspace ``root`` into the new folder ``dest``
    (all or nothing); the number of files. A file a run need not write is skipped when absent;
    any other missing file is a :class:`DataError`."""
    if dest.exists():
        raise DataError(f"{dest} exists; keep a study under a new name, or remove it first")
    files = [f for f, always in study_files(cfg).items() if always or (root / f).is_file()]
    if missing := [str(f) for f in files if not (root / f).is_file()]:
        raise DataError(
            f"{root} lacks {len(missing)} file(s) of its report, first {missing[0]}; "
            "run the pipeline to its report there first (dvc repro report)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with Outputs() as out:
        folder = out.folder(dest)
        for name in files:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, folder / name)
        out.commit()
    return len(files)
