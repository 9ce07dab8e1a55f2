"""Named sets of parameter overrides, run as DVC experiments.

    python -m metalearn.recipe --list
    python -m metalearn.recipe mirror-data          # dvc exp run -n mirror-data -S ... episodify
    python -m metalearn.recipe mirror-data --dry-run  # print that command only
    python -m metalearn.recipe efficiency-cpu     # dvc exp run ... benchmarks/dvc.yaml

A recipe is a list of Hydra overrides (the grammar of ``dvc exp run -S``) plus the stages it
targets; ``tests/test_recipe.py`` checks that each one yields a valid config.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass

REAL_DATASETS = ("jester", "movielens100k", "movielens1m", "omniglot", "miniimagenet")
REAL_BENCHMARKS = {
    "jester": ("shot10", "shot20"),
    "movielens100k": ("shot10", "shot20"),
    "movielens1m": ("shot10", "shot20"),
    "omniglot": ("way5shot1", "way5shot5", "way20shot1", "way20shot5"),
    "miniimagenet": ("way5shot1", "way5shot5"),
}


def _benchmarks(table: dict[str, tuple[str, ...]]) -> list[str]:
    """Overrides that replace ``pipeline.benchmarks`` (Hydra merges dicts: delete, then add)."""
    entries = ",".join(
        f"{d}-{s}:{{dataset:{d},setting:{s}}}" for d, settings in table.items() for s in settings
    )
    return [
        f"pipeline.datasets=[{','.join(table)}]",
        "~pipeline.benchmarks",
        f"+pipeline.benchmarks={{{entries}}}",
    ]


# What ../shared/datasets (the local mirror) holds: Jester part 1 only, 242 Omniglot characters.
MIRROR = [
    "data.jester.download.parts=[1]",
    "data.omniglot.classes.train=162",
    "data.omniglot.classes.val=20",
    "data.omniglot.classes.test=60",
]


def _for(benchmarks: list[str], **keys: object) -> list[str]:
    """``++pipeline.benchmarks.<b>.<key>=<value>`` for each benchmark: a benchmark's own protocol
    (``++`` adds the key or replaces it)."""
    return [f"++pipeline.benchmarks.{b}.{k}={v}" for b in benchmarks for k, v in keys.items()]


OMNIGLOT = [f"omniglot-{s}" for s in REAL_BENCHMARKS["omniglot"]]
MINIIMAGENET = [f"miniimagenet-{s}" for s in REAL_BENCHMARKS["miniimagenet"]]

# The whole suite on a 2-core CPU in under two hours (docs/protocols.md "The CPU recipe"): the
# protocols' inner loops unchanged, meta-training budgets cut to fit, the largest share (1,000
# iterations) to MAML on Omniglot 5-way 1-shot (its 95 % check); convnets at 32 filters on 2 cores.
CPU = [
    *MIRROR,
    # regression and CF: 50 iterations; meta-lr 1e-2 beat 1e-3 on meta-val at that budget
    # (MovieLens-100K 10-shot, MAML 0.258 vs 0.277 nRMSE), inner lr 0.01 beat 0.1 (FOMAML)
    "train.iterations=50",
    "train.val_every=25",
    "train.meta_lr=0.01",
    "algo.adjoint.trajectory=store",  # the authors' choice; the same gradient, no recomputation
    # the convnets keep the MAML paper's meta-lr 1e-3 (1e-2 stalled MAML on Omniglot near 83 %)
    *_for(OMNIGLOT + MINIIMAGENET, **{"train.meta_lr": 0.001}),
    *_for(OMNIGLOT + MINIIMAGENET, **{"model.filters": 32, "train.threads": 2}),
    *_for(OMNIGLOT + MINIIMAGENET, **{"train.iterations": 40, "train.val_every": 20}),
    *_for(["omniglot-way5shot1"], **{"algo.maml.iterations": 1000, "train.val_every": 100}),
    *_for(["omniglot-way5shot5"], **{"train.meta_batch": 8}),
    # 20-way and MiniImageNet cost 4-20x more per task: 20 iterations of 2 tasks (MiniImageNet:
    # 10; its 5-shot second-order MAML took 447 s for 20 in the first run)
    *_for(OMNIGLOT[2:] + MINIIMAGENET, **{"train.meta_batch": 2, "train.iterations": 20}),
    *_for(MINIIMAGENET, **{"train.iterations": 10, "train.val_every": 10}),
    # their meta-val and meta-test tasks are the costliest part: fewer and smaller ones
    "data.omniglot.val_tasks=20",
    *[f"data.omniglot.settings.{s}.queries=5" for s in ("way20shot1", "way20shot5")],
    "data.miniimagenet.val_tasks=10",
    *[f"data.miniimagenet.settings.{s}.train_queries=5" for s in ("way5shot1", "way5shot5")],
    *_for([*OMNIGLOT[2:], *MINIIMAGENET], **{"eval.tasks": 25}),
]


# Collaborative filtering and synthetic regression only (issue 13's study): the other benchmarks'
# entries are deleted, so `report` and `tune` reach only these ten.
CF = [f"{d}-{s}" for d in ("jester", "movielens100k", "movielens1m") for s in REAL_BENCHMARKS[d]]
SYNTHETIC = [f"{d}-shot{n}" for d in ("cosmixture", "alpine") for n in (50, 100)]
STUDY_KEYS = [
    "algo.adjoint.trajectory=store",  # the authors' choice; the same gradient, no recomputation
    "train.val_every=25",
]
ONLY_CF_AND_SYNTHETIC = [
    "pipeline.datasets=[jester,movielens100k,movielens1m,cosmixture,alpine]",
    *(f"~pipeline.benchmarks.{b}" for b in OMNIGLOT + MINIIMAGENET),
    *STUDY_KEYS,
]

# Fair tuning of the ten on a 2-core CPU (docs/protocols.md "Tuning"): one benchmark per dataset
# (the tuned values stand for its other setting), every gradient-trained learner on the same four
# inner step sizes (alpha * K from 0.005 to 1.5 across MAML's K = 5 and the others' 50; the
# first sweep's choices sat on its lower edge, 0.003) at one meta-lr, 300 meta-iterations
# each, two grid points at once (one per core).
TUNE_CPU = [
    *MIRROR,
    *ONLY_CF_AND_SYNTHETIC,
    "tune.inner_lr=[0.001,0.003,0.01,0.03]",
    "tune.meta_lr=[0.003]",
    "tune.iterations=300",
    "train.workers=2",
]

# The study of the ten on a 2-core CPU: every learner and baseline, 3 training seeds (all three
# at once: the two cores share them, 1.5 seed-times a stage instead of 2 with two workers), the
# tuned values of params.yaml, the tuning budget of 300 meta-iterations (model selection on
# meta-val every 25).
STUDY_BUDGET = ["train.iterations=300", "train.meta_lr=0.003", "train.workers=3"]
STUDY_CPU = [*MIRROR, *ONLY_CF_AND_SYNTHETIC, *STUDY_BUDGET]


# study-cpu on the six CF benchmarks alone (under an hour here): its cells are study-cpu's, so
# a later study-cpu in the same workspace takes them from DVC's run cache.
STUDY_CPU_CF = [
    *STUDY_CPU,
    "pipeline.datasets=[jester,movielens100k,movielens1m]",
    *(f"~pipeline.benchmarks.{b}" for b in SYNTHETIC),
    f"tune.benchmarks=[{','.join(b for b in CF if b.endswith('shot10'))}]",
]

# The Adjoint MAML paper's Table 2 as a protocol: the six CF benchmarks with K = 100 inner steps
# (MAML and MAML++ 10) where Table 1 has 50 (5); everything else, the tuned step sizes included,
# as study-cpu (the paper changes K alone). Its report compares with Table 2.
TABLE_2 = ["algo.steps=100", "algo.maml.steps=10", "algo.mamlpp.steps=10"]
STUDY_CPU_TABLE_2 = [*STUDY_CPU_CF, *TABLE_2]

# Omniglot 5-way 1- and 5-shot with every learner on a 2-core CPU in about 1.5 hours: the
# protocols' inner loops (MAML++ its own 5 steps), the same 500 meta-iterations for every
# learner (16 tasks a meta-batch; 5-shot, five times the images a task: 4), the CPU recipe's
# Conv4 at 32 filters and 20 meta-val tasks. Each key is the benchmarks' own (or Omniglot's),
# so these cells are the same beside study-cpu's.
IMAGES = OMNIGLOT[:2]
IMAGE_CELLS = [
    "data.omniglot.val_tasks=20",
    *_for(IMAGES, **{"model.filters": 32, "train.threads": 2, "train.meta_lr": 0.001}),
    *_for(IMAGES, **{"train.iterations": 500, "train.val_every": 50}),
    *_for(IMAGES, **{"train.meta_batch": 16}),
    *_for(IMAGES[1:], **{"train.meta_batch": 4}),
]

# Every family the CPU lifts in one report, the README's results: study-cpu's CF and synthetic
# cells and images-cpu's Omniglot cells, unchanged (so after those two ran in a workspace, this
# takes every cell from DVC's run cache and only reports). MiniImageNet waits for a GPU (the CPU
# recipe's 10 iterations left it at chance).
STUDY_CPU_ALL = [
    *MIRROR,
    "pipeline.datasets=[jester,movielens100k,movielens1m,omniglot,cosmixture,alpine]",
    *(f"~pipeline.benchmarks.{b}" for b in OMNIGLOT[2:] + MINIIMAGENET),
    *STUDY_KEYS,
    *STUDY_BUDGET,
    *IMAGE_CELLS,
]
IMAGES_CPU = [
    *STUDY_CPU_ALL,
    "pipeline.datasets=[omniglot]",
    *(f"~pipeline.benchmarks.{b}" for b in [*CF, *SYNTHETIC]),
    "pipeline.cf_benchmarks=[]",
    "tune.benchmarks=[]",
]


# The study on MovieLens 100K 10-shot alone, the benchmark tuned first (about an hour on 2 cores,
# most of it Adjoint MAML's three seeds).
ML100K = "movielens100k-shot10"
STUDY_CPU_ML100K = [
    *STUDY_CPU,
    "pipeline.datasets=[movielens100k]",
    *(f"~pipeline.benchmarks.{b}" for b in [*CF, *SYNTHETIC] if b != ML100K),
    f"pipeline.cf_benchmarks=[{ML100K}]",
    f"tune.benchmarks=[{ML100K}]",
]


# The efficiency stage on a 2-core CPU in about half an hour (29 min on 2026-12-05, the peer
# table of every learner at two K a problem included; benchmarks/README.md): every K of the
# sweep, one Conv4 task per meta-gradient and one timed call after the first, 60 s a point
# (Adjoint MAML's heun modes on the Conv4 run out of it at K = 500), one task in the float64
# accuracy comparison (exact MAML through 100 Conv4 steps in float64 needs ~6 GB a task). Run
# it alone: a second job on the two cores slows both by far more than 2x (torch's threads wait
# for each other).
EFFICIENCY_CPU = [
    "efficiency.device=cpu",
    "efficiency.meta_batch.omniglot_conv4=1",
    "efficiency.repeats=1",
    "efficiency.seconds=60",
    "efficiency.accuracy_meta_batch=1",
]


@dataclass(frozen=True)
class Recipe:
    description: str
    overrides: list[str]
    targets: tuple[str, ...] = ()


RECIPES = {
    "mirror-data": Recipe(
        "download, verify and episodify every real dataset from METALEARN_DATA_MIRROR "
        "(params narrowed to what ../shared/datasets holds); no training",
        [
            *_benchmarks(REAL_BENCHMARKS),
            *MIRROR,
            "tune.benchmarks=[jester-shot10,movielens100k-shot10,movielens1m-shot10]",
        ],
        targets=("episodify",),
    ),
    "cpu": Recipe(
        "every learner on every benchmark from METALEARN_DATA_MIRROR on a 2-core CPU in under "
        "two hours: the papers' inner loops, small meta-training budgets (the efficiency "
        "study is its own pipeline: dvc repro benchmarks/dvc.yaml)",
        CPU,
        targets=("report",),
    ),
    "tune-cpu": Recipe(
        "fair tuning of every gradient-trained learner on one CF or synthetic benchmark per "
        "dataset (same grid, same budget) on a 2-core CPU; then `python -m metalearn.tuning "
        "apply` writes the choices into params.yaml",
        TUNE_CPU,
        targets=("tuning/dvc.yaml",),
    ),
    "study-cpu": Recipe(
        "every learner and baseline on the collaborative-filtering and synthetic benchmarks, "
        "3 seeds, paired statistics, on a 2-core CPU",
        STUDY_CPU,
        targets=("report",),
    ),
    "study-cpu-cf": Recipe(
        "study-cpu on the six collaborative-filtering benchmarks alone (Table 1's protocol)",
        STUDY_CPU_CF,
        targets=("report",),
    ),
    "study-cpu-table2": Recipe(
        "study-cpu's collaborative-filtering benchmarks under the Adjoint MAML paper's Table 2 "
        "protocol (K = 100, MAML and MAML++ 10), 3 seeds, paired statistics, on a 2-core CPU",
        STUDY_CPU_TABLE_2,
        targets=("report",),
    ),
    "study-cpu-all": Recipe(
        "study-cpu and images-cpu in one report, every family the CPU lifts (MiniImageNet "
        "waits for a GPU): about 3.5 hours on a 2-core CPU, or a report alone after both ran",
        STUDY_CPU_ALL,
        targets=("report",),
    ),
    "images-cpu": Recipe(
        "Omniglot 5-way 1- and 5-shot, every learner the same 500 meta-iterations, from "
        "METALEARN_DATA_MIRROR on a 2-core CPU in about 1.5 hours",
        IMAGES_CPU,
        targets=("report",),
    ),
    "study-cpu-ml100k": Recipe(
        "study-cpu on MovieLens 100K 10-shot only: every learner and the baselines, 3 seeds",
        STUDY_CPU_ML100K,
        targets=("report",),
    ),
    "efficiency-cpu": Recipe(
        "the efficiency stage (time and memory against K, gradient accuracy, throughput "
        "against higher) on a 2-core CPU in about half an hour: one Conv4 task, one timed call",
        EFFICIENCY_CPU,
        targets=("benchmarks/dvc.yaml",),
    ),
}


def command(name: str, extra: list[str]) -> list[str]:
    recipe = RECIPES[name]
    args = ["dvc", "exp", "run", "-n", name]
    for override in recipe.overrides:
        args += ["-S", override]
    return [*args, *extra, *recipe.targets]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", nargs="?", choices=sorted(RECIPES))
    parser.add_argument("--list", action="store_true", help="list the recipes")
    parser.add_argument("--dry-run", action="store_true", help="print the command only")
    args, extra = parser.parse_known_args(argv)
    if args.list or args.name is None:
        for name, recipe in RECIPES.items():
            print(f"{name}: {recipe.description}")
        return 0
    cmd = command(args.name, extra)
    print(shlex.join(cmd), flush=True)
    return 0 if args.dry_run else subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
