"""The report's two commands on a checkout:

python -m metalearn.report readme   # copy results/summary.md's headline into README.md
python -m metalearn.report check    # recompute summary.json's paired numbers from the
                                    # committed per-task scores (no cache, no training)
python -m metalearn.report check --root results/studies/<study>   # a committed study's: its
                                    # params.yaml and results/, as its workspace had them
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from metalearn.config import load_config
from metalearn.errors import StageError
from metalearn.report.readme import update_readme
from metalearn.report.recheck import recheck


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m metalearn.report", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("command", choices=["readme", "check"])
    parser.add_argument(
        "--root", type=Path, default=None,
        help="check: a workspace or a committed study holding params.yaml and results/ "
        "(default: this checkout)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.command == "readme":
            print(update_readme())
        elif args.root is None:
            print(recheck(load_config()))
        else:
            print(recheck(load_config(params_path=args.root / "params.yaml"), args.root))
    except (StageError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
