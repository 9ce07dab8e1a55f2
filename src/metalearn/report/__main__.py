"""The report's two commands on a checkout:

python -m metalearn.report readme [--root results/studies/<study>]   # copy the report's
                                    # headline (results/summary.md) into README.md
python -m metalearn.report check    # recompute summary.json's paired numbers from the
                                    # committed per-task scores (no cache, no training)
python -m metalearn.report check --root results/studies/<study>   # a committed study's: its
                                    # params.yaml and results/, as its workspace had them
python -m metalearn.report keep results/studies/<study> [--root <workspace>]   # keep a run
                                    # so: the files check reads, copied at the same paths
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from metalearn.config import load_config
from metalearn.errors import StageError
from metalearn.report.keep import PARAMS, keep
from metalearn.report.readme import update_readme
from metalearn.report.recheck import recheck


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m metalearn.report", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("command", choices=["readme", "check", "keep"])
    parser.add_argument("dest", nargs="?", type=Path, help="keep: the new study folder")
    parser.add_argument(
        "--root", type=Path, default=None,
        help="check, readme: a workspace or a committed study holding params.yaml and "
        "results/; keep: the workspace to copy from (default: this checkout)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if (args.command == "keep") != (args.dest is not None):
        parser.error("keep takes the new study folder, and only keep takes a folder")
    root = Path() if args.root is None else args.root
    try:
        if args.command == "readme":
            print(update_readme(source=args.root))
        elif args.command == "keep":
            count = keep(load_config(params_path=root / PARAMS), root, args.dest)
            print(f"{args.dest}: {count} files of {root}'s report; check it: "
                  f"python -m metalearn.report check --root {args.dest}")  # fmt: skip
        elif args.root is None:
            print(recheck(load_config()))
        else:
            print(recheck(load_config(params_path=root / PARAMS), root))
    except (StageError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
