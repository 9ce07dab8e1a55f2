"""README's Results block is generated: :func:`readme_with_results` puts the report's headline,
the best learner per benchmark against the papers and the best meta-learner against the
baselines, between the README's markers (``python -m metalearn.report readme``). The full
report stays in results/summary.md.
"""

from __future__ import annotations

import re
from pathlib import Path

from metalearn import paths

README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"
#: The subsections of results/summary.md that README shows (each up to the next heading of its
#: level); the first must be there, the second is where the report has paired comparisons.
HEADLINE = "### Best learner per benchmark against the papers"
BASELINES = "### The best meta-learner against the baselines"


def headline(summary_md: str) -> str:
    """The report's :data:`HEADLINE` subsection, and :data:`BASELINES` where the report has it:
    each heading, note and table, up to the next ``### `` (or higher) heading."""
    first = _subsection(summary_md, HEADLINE)
    if first is None:
        raise ValueError(f"the report lacks the subsection {HEADLINE!r}")
    second = _subsection(summary_md, BASELINES)
    return first if second is None else f"{first}\n\n{second}"


def _subsection(summary_md: str, heading: str) -> str | None:
    match = re.search(rf"^{re.escape(heading)}[ \t]*$", summary_md, flags=re.MULTILINE)
    if match is None:
        return None
    rest = summary_md[match.end() :]
    end = re.search(r"^#{1,3} ", rest, flags=re.MULTILINE)
    return (heading + (rest[: end.start()] if end else rest)).strip()


def readme_with_results(readme: str, summary_md: str) -> str:
    """``readme`` with the block between the results markers replaced by the report's headline
    (:func:`headline`): the README's Results block is generated."""
    if README_BEGIN not in readme or README_END not in readme:
        raise ValueError(f"README.md lacks the markers {README_BEGIN} ... {README_END}")
    head, rest = readme.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{headline(summary_md)}\n{README_END}{tail}"


def update_readme(readme: Path = Path("README.md"), summary_md: Path = paths.SUMMARY_MD) -> str:
    """Copy ``summary_md``'s headline into ``readme``'s Results block; the line to print."""
    readme.write_text(readme_with_results(readme.read_text(), summary_md.read_text()))
    return f"{readme}: Results block updated from {summary_md}"
