"""The documentation holds together: README is a front door, and every relative link in README,
docs/ and benchmarks/README.md reaches a file (and, with ``#anchor``, a heading) of the repo."""

import functools
import re
from pathlib import Path

import pytest

from metalearn.report.readme import BASELINES, HEADLINE, headline

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks/README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target), also ![alt](image)


def unfenced(text: str) -> str:
    """``text`` without fenced code blocks (a ``#`` comment there is not a heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but '-' and '_' dropped, spaces
    to '-'."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(path: Path) -> set[str]:
    """The anchors of ``path``'s headings, a repeated one with GitHub's -1, -2 ... suffixes."""
    seen: dict[str, int] = {}
    found = set()
    headings = re.findall(r"^#{1,6} (.+)$", unfenced(path.read_text()), re.MULTILINE)
    for heading in headings:
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return found


def links(path: Path) -> list[str]:
    """``path``'s relative link targets: not in code, not ``http(s):`` or ``mailto:``."""
    text = re.sub(r"`[^`\n]*`", "", unfenced(path.read_text()))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = []
    for target in links(doc):
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target}: no {dest.relative_to(ROOT)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 260, f"README.md has {lines} lines: move detail into docs/"


def test_slugs_follow_github():
    assert slug("Scale: one GPU, several GPUs, several machines") == (
        "scale-one-gpu-several-gpus-several-machines"
    )
    assert slug("What `make repro` writes") == "what-make-repro-writes"
    assert slug("Paper's claims") == "papers-claims"


def test_readme_headline_is_one_subsection():
    summary = f"# Report\n\n### Before\n\nx\n\n{HEADLINE}\n\nnote\n\n| a |\n\n### After\n\ny\n"
    assert headline(summary) == f"{HEADLINE}\n\nnote\n\n| a |"
    both = summary.replace("### After", f"{BASELINES}\n\n| b |\n\n### After")
    assert headline(both) == f"{HEADLINE}\n\nnote\n\n| a |\n\n{BASELINES}\n\n| b |"
    with pytest.raises(ValueError, match="lacks the subsection"):
        headline("# Report\n\n### Other\n")
