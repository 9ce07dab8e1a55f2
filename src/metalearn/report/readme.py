"""README's Results block is generated: :func:`readme_with_results` puts the report's headline,
the best learner per benchmark against the papers and the best meta-learner against the
baselines, between the README's markers (``python -m metalearn.report readme``). The begin
marker names the folder whose ``results/summary.md`` it came from (this checkout's, or a study
kept under results/studies: :mod:`metalearn.report.keep`), so the block is checked against it.
"""

from __future__ import annotations

import re
from pathlib import Path

from metalearn import paths

README_BEGIN, README_END = "<!-- results:begin", "<!-- results:end -->"
SOURCE = re.compile(r"<!-- results:begin(?: from=(\S+))? -->")
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


def readme_with_results(readme: str, summary_md: str, source: Path | None = None) -> str:
    """``readme`` with the block between the results markers replaced by the report's headline
    (:func:`headline`), the begin marker naming ``source``, the folder of the report (None:
    this checkout): the README's Results block is generated."""
    if README_BEGIN not in readme or README_END not in readme:
        raise ValueError(f"README.md lacks the markers {README_BEGIN} -->... {README_END}")
    head, rest = readme.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    begin = f"{README_BEGIN} from={source.as_posix()} -->" if source else f"{README_BEGIN} -->"
    return f"{head}{begin}\n{headline(summary_md)}\n{README_END}{tail}"


def results_source(readme: str) -> Path | None:
    """The folder the README's Results block names as its report's (None: this checkout)."""
    match = SOURCE.search(readme)
    if match is None:
        raise ValueError(f"README.md lacks the marker {README_BEGIN} [from=<folder>] -->")
    return None if match.group(1) is None else Path(match.group(1))


def update_readme(readme: Path = Path("README.md"), source: Path | None = None) -> str:
    """Copy the headline of ``source``'s report (None: this checkout's) into ``readme``'s
    Results block; the line to print."""
    summary_md = (source or Path()) / paths.SUMMARY_MD
    readme.write_text(readme_with_results(readme.read_text(), summary_md.read_text(), source))
    return f"{readme}: Results block updated from {summary_md}"
