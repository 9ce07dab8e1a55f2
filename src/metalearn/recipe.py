"""Named sets of parameter overrides, run as DVC experiments.

    python -m metalearn.recipe --list
    python -m metalearn.recipe mirror-data          # dvc exp run -n mirror-data -S ... episodify
    python -m metalearn.recipe mirror-data --dry-run  # print that command only

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


@dataclass(frozen=True)
class Recipe:
    description: str
    overrides: list[str]
    targets: tuple[str, ...] = ()


RECIPES = {
    "mirror-data": Recipe(
        "download, verify and episodify every real dataset from METALEARN_DATA_MIRROR "
        "(params narrowed to what ../shared/datasets holds); no training",
        [*_benchmarks(REAL_BENCHMARKS), *MIRROR],
        targets=("episodify",),
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
