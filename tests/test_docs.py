"""The README and docs/ point at things that exist: every relative link names a file of this repository, and every
``#anchor`` a heading of the page it points into (GitHub's anchor rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^\s*```")


def _prose(page: Path) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchor_of(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    text = re.sub(r"`|\*\*?", "", heading.strip().lstrip("#").strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor_of(line) for line in _prose(page) if line.startswith("#")}


def links(page: Path) -> list[str]:
    return [m.group(1) for line in _prose(page) for m in _LINK.finditer(line)]


def test_the_docs_pages_exist_and_the_readme_links_each_of_them() -> None:
    pages = {p.name for p in PAGES[1:]}
    assert {"litellm.md", "operations.md", "langchain.md", "collect.md", "training.md"} <= pages
    readme_links = set(links(ROOT / "README.md"))
    assert all(any(link.startswith(f"docs/{name}") for link in readme_links) for name in pages)


def test_anchor_of_follows_githubs_rules() -> None:
    assert anchor_of("## Limits: a cost ceiling and a quality floor") == "limits-a-cost-ceiling-and-a-quality-floor"
    assert anchor_of("## litellm's own routing record") == "litellms-own-routing-record"
    assert anchor_of("## routing_strategy_args") == "routing_strategy_args"
    assert anchor_of("## Roll it out: shadow, canary, then all traffic") == "roll-it-out-shadow-canary-then-all-traffic"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_names_a_file_and_heading_that_exist(page: Path) -> None:
    broken = []
    for link in links(page):
        if re.match(r"[a-z]+:", link):  # https:, mailto:, hf: ...
            continue
        target, _, fragment = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            broken.append(f"{link}: no heading #{fragment} in {path.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)} has broken links:\n" + "\n".join(broken)
