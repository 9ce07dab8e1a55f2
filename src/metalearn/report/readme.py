"""README's Results section is generated: :func:`readme_with_results` puts the report between
the README's markers, and :func:`main` is ``python -m metalearn.report readme``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from metalearn import paths

README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"


def readme_with_results(readme: str, summary_md: str) -> str:
    """``readme`` with the block between the results markers replaced by the report (its tables
    and notes, without the top heading): the README's Results section is generated."""
    if README_BEGIN not in readme or README_END not in readme:
        raise ValueError(f"README.md lacks the markers {README_BEGIN} ... {README_END}")
    body = summary_md.split("\n", 1)[1].strip() if summary_md.startswith("# ") else summary_md
    head, rest = readme.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{body}\n{README_END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m metalearn.report readme``: copy results/summary.md into README.md."""
    parser = argparse.ArgumentParser(prog="python -m metalearn.report", description=main.__doc__)
    parser.add_argument("command", choices=["readme"])
    parser.parse_args(argv)
    readme = Path("README.md")
    readme.write_text(readme_with_results(readme.read_text(), paths.SUMMARY_MD.read_text()))
    print(f"{readme}: Results section updated from {paths.SUMMARY_MD}")
    return 0
