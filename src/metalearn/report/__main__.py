"""The report's two commands on a checkout:

python -m metalearn.report readme   # copy results/summary.md's headline into README.md
python -m metalearn.report check    # recompute summary.json's paired numbers from the
                                    # committed per-task scores (no cache, no training)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
    command = parser.parse_args(argv).command
    try:
        print(update_readme() if command == "readme" else recheck(load_config()))
    except (StageError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
